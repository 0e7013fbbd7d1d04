"""Measuring in rounds: every compared system is up at once, and each round runs them in turn.

The figures of one case vary up to 1.7x between two timed runs, more than most differences
between the systems, so measuring one system after another (each in a block of its own) cannot
support a ratio. Here the raw engine (a child process waiting on stdin), our server and
mlx_lm.server are all loaded, and each round measures them one after another, seconds apart:

- single stream, ``--repeats`` rounds: ``generate_step``, ``BatchGenerator`` at batch 1, ours,
  mlx_lm.server, all on the round's chat;
- each concurrency level, ``--sweep-repeats`` rounds: ours, mlx_lm.server, the raw
  ``BatchGenerator`` at that batch, all on the round's chats.

While one is measured the others are idle (servers with no requests, the engine blocked on
stdin); their CPU time is sampled around every measurement to show that. Every system is warmed
up at a level before its first round there. A system that times out is not tried at that level
again nor at larger ones; one whose process exits is dropped.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

from bench import clients, server_timing, servers, workload
from bench.clients import CLOCK, CaseResult, ClientPool
from bench.engine import EngineFailed, EngineProcess
from bench.results import (
    BATCH_ONE,
    GENERATE_STEP,
    OURS,
    RAW,
    SINGLE_ORDER,
    SWEEP_ORDER,
    Measure,
    Run,
    from_case,
)
from bench.stats import tps

ENGINE = "raw engine"  # the process behind GENERATE_STEP, BATCH_ONE and RAW
_ENGINE_SYSTEMS = (GENERATE_STEP, BATCH_ONE, RAW)
Progress = Callable[[str], None]
_PARTS = ("ttft_mean_ms", "server_ttft_ms", "queue_ms", "prefill_ms")  # shown when measured


def round_order(systems: list[str], round_: int) -> list[str]:
    """The systems in the order round ``round_`` measures them: as given in even rounds,
    reversed in odd ones (A B C, C B A, ...), so that a drift of the machine's speed within a
    round does not always favour the system measured first."""
    return list(systems) if round_ % 2 == 0 else list(systems)[::-1]


def _streams(count: int) -> str:
    return f"{count} stream{'s' if count != 1 else ''}"


class Bench:
    """The running systems of one run, and the rounds measured on them."""

    def __init__(self, run: Run, args: argparse.Namespace, bias: dict[str, int],
                 engine: EngineProcess | None, specs: dict[str, servers.ServerSpec],
                 progress: Progress) -> None:
        self.run, self.args, self.bias, self.progress = run, args, bias, progress
        self.engine = engine
        self.specs = specs
        self.pool: ClientPool | None = None
        self.given_up: dict[str, str] = {}  # system -> why it is not measured any more

    # ----- which systems run, and their processes -----

    def live(self, order: tuple[str, ...]) -> list[str]:
        """The systems of ``order`` that this run has, in that order."""
        have = set(self.specs) | (set(_ENGINE_SYSTEMS) if self.engine else set())
        return [s for s in order if s in have]

    def _process(self, system: str) -> str:
        return ENGINE if system in _ENGINE_SYSTEMS else system

    def _pids(self) -> dict[str, int]:
        pids = {name: spec.pid for name, spec in self.specs.items() if spec.pid}
        if self.engine is not None:
            pids[ENGINE] = self.engine.pid
        return pids

    def _measure(self, system: str, work: Callable[[], Measure]) -> Measure:
        """Run one measurement, adding the CPU time the idle systems used meanwhile."""
        idle = {name: pid for name, pid in self._pids().items()
                if name != self._process(system)}
        before = {name: servers.cpu_seconds(pid) for name, pid in idle.items()}
        started = CLOCK()
        measure = work()
        wall = CLOCK() - started
        for name, pid in idle.items():
            after = servers.cpu_seconds(pid)
            if after is not None and before[name] is not None:
                used = self.run.idle_cpu.setdefault(name, [0.0, 0.0])
                used[0] += after - before[name]
                used[1] += wall
        return measure

    def _drop(self, system: str, why: str) -> None:
        """Stop measuring a process's systems for the rest of the run."""
        name = self._process(system)
        self.run.failures.setdefault(name, why)
        for s in (_ENGINE_SYSTEMS if name == ENGINE else (name,)):
            self.given_up[s] = f"dropped: {name} failed"

    # ----- one measurement of each kind -----

    def _server(self, name: str, chats: list[workload.Messages], max_tokens: int) -> CaseResult:
        spec = self.specs[name]
        processes = self.run.client_processes.get(len(chats), 1)
        case = clients.run_case(name, spec.base_url, spec.model, chats, max_tokens, self.bias,
                                self.args.case_timeout, self.pool, processes)
        if case.error and not spec.alive:
            code = spec.process.returncode if spec.process else None
            self._drop(name, f"exited with {code} during the run:\n{spec.log_tail()}")
        return case

    def _engine(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.engine is not None
        try:
            return self.engine.ask(command, self.args.case_timeout + 120)
        except EngineFailed as exc:
            self._drop(RAW, str(exc))
            return {"error": str(exc)}

    def _engine_measure(self, system: str, streams: int, round_: int,
                        command: dict[str, Any]) -> Measure:
        reply = self._engine(command)
        error = reply.pop("error", None)
        figures = {k: v for k, v in reply.items() if k in ("decode_tps", "output_tps")}
        return Measure(system, streams, round_, figures=figures, error=error)

    def _one(self, system: str, streams: int, round_: int, single: bool) -> Measure:
        """``system``'s measure of round ``round_`` (a single-stream round when ``single``)."""
        tokens = self.args.max_tokens
        if system in self.given_up:
            return Measure(system, streams, round_, error=f"skipped: {self.given_up[system]}")
        if system == GENERATE_STEP:
            command = {"op": "generate_step", "round": round_, "max_tokens": tokens}
            return self._engine_measure(system, 1, round_, command)
        if system in (BATCH_ONE, RAW):
            command = {"op": "batch", "size": streams, "round": round_, "max_tokens": tokens,
                       "single": single}
            return self._engine_measure(system, streams, round_, command)
        chats = ([workload.single_messages(round_)] if single
                 else workload.sweep_messages(streams, round_))
        if system != OURS:
            return from_case(system, round_, self._server(system, chats, tokens), single)
        before = server_timing.scrape(self.specs[system].base_url)
        measure = from_case(system, round_, self._server(system, chats, tokens), single)
        if measure.ok:  # where the server's own TTFT went (bench.server_timing)
            after = server_timing.scrape(self.specs[system].base_url)
            measure.figures.update(server_timing.mean_parts(before, after))
            measure.figures["ttft_mean_ms"] = 1000 * statistics.fmean(
                s.ttft for s in measure.case.streams)
        return measure

    def _round(self, order: tuple[str, ...], streams: int, round_: int, total: int,
               single: bool) -> None:
        for system in round_order(self.live(order), round_):
            measure = self._measure(system, lambda s=system: self._one(s, streams, round_,
                                                                       single))
            where = self.run.single if single else self.run.sweep.setdefault(streams, {})
            where.setdefault(system, []).append(measure)
            shown = (measure.error if measure.error else
                     f"decode {tps(measure.figures.get('decode_tps'))} tok/s" if single else
                     f"output {tps(measure.figures.get('output_tps'))} tok/s, decode "
                     f"{tps(measure.figures.get('decode_tps'))} tok/s")
            parts = [f"{k} {measure.figures[k]:.0f}" for k in _PARTS if k in measure.figures]
            if parts:
                shown += f" (TTFT mean, ms: {', '.join(parts)})"
            self.progress(f"{'single stream' if single else _streams(streams)}, round "
                          f"{round_ + 1}/{total}, {system}: {shown}")
            if measure.error and "timed out" in measure.error and not single:
                self.given_up.setdefault(system, f"timed out at {streams} streams")

    def _warm(self, streams: int, sizes: tuple[int, ...]) -> None:
        """Each live system at this level, untimed: nothing measured pays for a first use."""
        if self.engine is not None and RAW not in self.given_up:
            for size in sizes:
                reply = self._engine({"op": "warm", "size": size})
                if reply.get("error"):
                    self.run.warnings.append(f"{ENGINE} warm-up, batch {size}: {reply['error']}")
        for name in self.specs:
            if name in self.given_up:
                continue
            for size in sizes:
                case = self._server(name, workload.warmup_messages(size), 4)
                if case.error:
                    self.run.warnings.append(f"{name} warm-up, {size} streams: {case.error}")

    # ----- the sections -----

    def single(self) -> None:
        """``--repeats`` single-stream rounds: generate_step, BatchGenerator, ours, peer."""
        self.progress(f"single stream: warming up, then {self.args.repeats} rounds of "
                      f"{', '.join(self.live(SINGLE_ORDER))}")
        self._warm(1, (1, min(4, self.args.slots)))
        for round_ in range(self.args.repeats):
            self._round(SINGLE_ORDER, 1, round_, self.args.repeats, single=True)

    def sweep(self) -> None:
        """Each concurrency level: ``--sweep-repeats`` rounds of ours, peer, raw engine."""
        for streams in self.args.concurrency:
            self.run.client_processes[streams] = clients.client_processes(
                streams, self.args.streams_per_client, self.args.max_client_procs)
        needed = max(self.run.client_processes.values(), default=1)
        if needed > 1 and self.specs:
            self.progress(f"starting {needed} client processes")
            self.pool = ClientPool(needed)
        for streams in self.args.concurrency:
            self.progress(f"{_streams(streams)}: warming up, then {self.args.sweep_repeats} "
                          f"rounds of {', '.join(self.live(SWEEP_ORDER))}")
            self._warm(streams, (streams,))
            for round_ in range(self.args.sweep_repeats):
                self._round(SWEEP_ORDER, streams, round_, self.args.sweep_repeats, single=False)

    def prefix(self, tokenizer: Any) -> None:
        """Our server: TTFT of a never-seen long system prompt, then of the same one with a new
        question (the others idle)."""
        if OURS not in self.specs or OURS in self.given_up:
            return
        system = workload.system_prompt(tokenizer, self.args.prefix_tokens)
        results = []
        for label, question in zip(("cold", "warm"), workload.QUESTIONS, strict=True):
            self.progress(f"{OURS}: prefix cache, {label}")
            results.append(self._server(OURS, [workload.prefix_messages(system, question)], 4))
        self.run.prefix = (results[0], results[1])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

