"""What one run measured, round by round: the data the report and the targets are built from.

A ``Measure`` is one system's figures in one round of one case. Rounds are kept in order, a
failed round included (its figures empty), so that round ``i`` of two systems, measured seconds
apart, can be paired for a ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.clients import CaseResult
from bench.stats import Ratio, Spread, cross_ratio, ratio_summary, spread

OURS = "triton-mlx"
PEER = "mlx_lm.server"
GENERATE_STEP = "generate_step"  # mlx-lm's single-sequence loop (raw engine)
BATCH_ONE = "BatchGenerator b1"  # mlx-lm's BatchGenerator at batch 1 (raw engine)
RAW = "raw BatchGenerator"  # the same at the sweep's batch size
SERVERS = (OURS, PEER)
SINGLE_ORDER = (GENERATE_STEP, BATCH_ONE, OURS, PEER)  # the order within a round
SWEEP_ORDER = (OURS, PEER, RAW)

# Figures (keys of Measure.figures), all in tok/s or seconds:
# decode_tps: a server's sum over streams of each stream's tokens after its first over their
#   time; the raw engine's tokens after every sequence had its first, over their time
# output_tps: all completion tokens over the case's wall time (prefill included)
# ttft_p50, ttft_p99, tpot_p50, tpot_p99: per stream, over the streams of the round


@dataclass
class Measure:
    """One system, one case, one round."""

    system: str
    streams: int
    round: int
    figures: dict[str, float] = field(default_factory=dict)
    requests: int = 0  # requests sent (streams; 0 for the raw engine)
    failed: int = 0  # requests that failed or had not finished at the timeout
    error: str | None = None
    case: CaseResult | None = field(default=None, repr=False)  # a server's streams

    @property
    def ok(self) -> bool:
        return self.error is None

    def value(self, figure: str) -> float | None:
        return self.figures.get(figure) if self.ok else None

    def record(self, section: str) -> dict[str, Any]:
        """A JSON-ready line for ``--json``."""
        return {"section": section, "system": self.system, "streams": self.streams,
                "round": self.round, **self.figures, "requests": self.requests,
                "failed": self.failed, "error": self.error}


def from_case(system: str, round_: int, case: CaseResult, single: bool = False) -> Measure:
    """A server's measure from its streamed case; ``single``: its one stream's decode rate."""
    measure = Measure(system, case.concurrency, round_, requests=case.concurrency,
                      failed=case.failed, error=case.error, case=case)
    if case.ok:
        if single:
            stream = case.streams[0]
            measure.figures = {"decode_tps": stream.decode_tps, "ttft_p50": stream.ttft,
                               "output_tps": case.output_tps}
        else:
            measure.figures = {
                "output_tps": case.output_tps, "decode_tps": case.decode_tps_sum,
                "ttft_p50": case.ttft(0.5), "ttft_p99": case.ttft(0.99),
                "tpot_p50": case.tpot(0.5), "tpot_p99": case.tpot(0.99)}
    elif case.error is None:
        measure.error = f"{case.concurrency - len(case.streams)} streams missing"
    return measure


@dataclass
class Run:
    """Everything one run measured; a part skipped by flag stays empty."""

    model_name: str
    max_tokens: int
    concurrency: list[int]
    logit_bias: dict[str, int]
    repeats: int  # single-stream rounds
    sweep_repeats: int  # rounds per concurrency level
    machine: list[str] = field(default_factory=list)
    load: list[str] = field(default_factory=list)  # how busy the machine was at start
    engine_facts: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)  # system -> command line
    notes: dict[str, str] = field(default_factory=dict)  # system -> what it reported
    single: dict[str, list[Measure]] = field(default_factory=dict)  # system -> rounds
    sweep: dict[int, dict[str, list[Measure]]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # system -> why it was dropped
    warnings: list[str] = field(default_factory=list)
    prefix: tuple[CaseResult, CaseResult] | None = None
    client_processes: dict[int, int] = field(default_factory=dict)  # streams -> processes
    idle_cpu: dict[str, list[float]] = field(default_factory=dict)  # system -> [cpu s, wall s]

    def systems(self, section: str) -> list[str]:
        """The systems measured in a section ("single" or "sweep"), in measuring order."""
        order = SINGLE_ORDER if section == "single" else SWEEP_ORDER
        seen = set(self.single) if section == "single" else {
            s for level in self.sweep.values() for s in level}
        return [s for s in order if s in seen]

    def rounds(self, system: str, streams: int | None = None) -> list[Measure]:
        """A system's rounds: single stream when ``streams`` is None, else that sweep level."""
        if streams is None:
            return self.single.get(system, [])
        return self.sweep.get(streams, {}).get(system, [])

    def values(self, system: str, figure: str, streams: int | None = None) -> list[float | None]:
        """One figure per round index (None where the round failed or did not run)."""
        rounds = self.rounds(system, streams)
        count = self.repeats if streams is None else self.sweep_repeats
        by_round = {m.round: m.value(figure) for m in rounds}
        return [by_round.get(i) for i in range(max(count, len(rounds)))]

    def spread(self, system: str, figure: str, streams: int | None = None) -> Spread | None:
        return spread(self.values(system, figure, streams))

    def ratio(self, a: tuple[str, str], b: tuple[str, str], streams: int | None = None) -> Ratio:
        """(system, figure) over (system, figure), paired per round at one level."""
        return ratio_summary(self.values(*a, streams), self.values(*b, streams))

    def level_ratio(self, system: str, figure: str, top: int, bottom: int) -> Ratio:
        """One system's figure at level ``top`` over level ``bottom`` (unpaired)."""
        return cross_ratio(self.values(system, figure, top), self.values(system, figure, bottom))

    def failed(self, system: str, streams: int | None = None) -> tuple[int, int]:
        """(failed requests, requests sent) over a case's rounds."""
        rounds = self.rounds(system, streams)
        return sum(m.failed for m in rounds), sum(m.requests for m in rounds)

    def records(self) -> list[dict[str, Any]]:
        lines = [m.record("single") for ms in self.single.values() for m in ms]
        return lines + [m.record("sweep") for level in self.sweep.values()
                        for ms in level.values() for m in ms]
