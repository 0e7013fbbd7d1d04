"""Issue 14's targets, each with what this run measured and PASS or FAIL.

Targets (the same for the bf16 and the 4-bit model; ratios within one run):

- one stream: our decode >= 0.95x ``generate_step`` and >= 1.0x ``mlx_lm.server``;
  TTFT p50 <= ``mlx_lm.server``'s;
- 64 streams: our decode >= 0.9x the raw ``BatchGenerator``'s, our output tok/s (prefill
  included) >= 0.8x its decode;
- 128 and 256 streams (when they ran): our output tok/s >= 1.3x and >= 1.5x ours at 64;
- no failed requests to our server.

A paired ratio (two systems in the same rounds) is judged on the median of its per-round
ratios; the TTFT target on the ratio of the two p50s (medians over the rounds); a ratio of two
levels, which no round pairs, on the ratio of their medians. The per-round range and the rounds
that met the target are shown beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.results import GENERATE_STEP, OURS, PEER, RAW, Run
from bench.stats import Ratio, paired_ratios, show, table, times


@dataclass(frozen=True)
class Target:
    """One target: its value (None when not measured), the bound, and which way is better."""

    label: str
    value: float | None
    bound: float
    higher_is_better: bool
    detail: str = ""  # the spread, how it was judged
    rounds_met: str = ""  # "4/5" for a paired ratio

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        met = self.value >= self.bound if self.higher_is_better else self.value <= self.bound
        return "PASS" if met else "FAIL"

    @property
    def goal(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        return f"{sign} {self.bound:g}" + ("x" if self.bound else "")


def _met(ratios: list[float], bound: float, higher: bool) -> str:
    if not ratios:
        return ""
    met = sum((r >= bound) if higher else (r <= bound) for r in ratios)
    return f"{met}/{len(ratios)}"


def _paired(run: Run, label: str, a: tuple[str, str], b: tuple[str, str], bound: float,
            streams: int | None = None, higher: bool = True) -> Target:
    """Judged on the median of per-round ratios."""
    r = run.ratio(a, b, streams)
    ratios = paired_ratios(run.values(*a, streams), run.values(*b, streams))
    return Target(label, r.rounds.median if r.rounds else None, bound, higher,
                  f"per-round {show(r.rounds, times)}; of medians {times(r.of_medians)}",
                  _met(ratios, bound, higher))


def _of_medians(label: str, r: Ratio, bound: float, higher: bool, detail: str,
                ratios: list[float] | None = None) -> Target:
    met = _met(ratios, bound, higher) if ratios is not None else ""
    return Target(label, r.of_medians, bound, higher, detail, met)


def evaluate(run: Run) -> list[Target]:
    """Every target this run can speak to; 128/256 only when those levels ran."""
    decode, output, ttft = "decode_tps", "output_tps", "ttft_p50"
    targets = [
        _paired(run, f"1 stream: {OURS} decode / `generate_step` decode",
                (OURS, decode), (GENERATE_STEP, decode), 0.95),
        _paired(run, f"1 stream: {OURS} decode / {PEER} decode",
                (OURS, decode), (PEER, decode), 1.0),
    ]
    r = run.ratio((OURS, ttft), (PEER, ttft))
    ratios = paired_ratios(run.values(OURS, ttft), run.values(PEER, ttft))
    targets.append(_of_medians(
        f"1 stream: TTFT p50 {OURS} / {PEER}", r, 1.0, False,
        f"ratio of the p50s; per-round {show(r.rounds, times)}", ratios))
    targets += [
        _paired(run, f"64 streams: {OURS} decode (sum over streams) / raw BatchGenerator decode",
                (OURS, decode), (RAW, decode), 0.9, 64),
        _paired(run, f"64 streams: {OURS} output tok/s / raw BatchGenerator decode",
                (OURS, output), (RAW, decode), 0.8, 64),
    ]
    for level, bound in ((128, 1.3), (256, 1.5)):
        if level in run.sweep and 64 in run.sweep:
            r = run.level_ratio(OURS, output, level, 64)
            targets.append(_of_medians(
                f"{level} streams: {OURS} output tok/s / its own at 64", r, bound, True,
                f"ratio of medians; from the rounds' extremes {show(r.rounds, times)}"))
    failed = sent = 0
    for streams in [None, *run.sweep]:
        f, s = run.failed(OURS, streams)
        failed, sent = failed + f, sent + s
    targets.append(Target(f"failed requests to {OURS} (every measured case)",
                          float(failed) if sent else None, 0, False, f"{failed} of {sent}"))
    return targets


def target_lines(run: Run) -> list[str]:
    rows = []
    for t in evaluate(run):
        value = ("n/a" if t.value is None else f"{t.value:.0f}" if t.bound == 0
                 else times(t.value))
        rows.append([t.label, t.goal, value, t.verdict, t.rounds_met, t.detail])
    return ["## Targets (issue 14; ratios within this run)",
            *table(["target", "goal", "measured", "verdict", "rounds meeting it", "detail"],
                   rows)]
