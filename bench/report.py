"""Tables for the terminal and for the README, from the measurements of one run.

Every number says what it counts: output tok/s is all completion tokens of a case over its wall
time (prefill included), decode tok/s excludes the first token, ratios are ours/theirs (tok/s:
higher is better; TTFT: lower is better). A case that failed or timed out is printed as such.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.clients import CaseResult, percentile
from bench.engine import EngineResults

if TYPE_CHECKING:
    from bench.structured import Section

OURS = "triton-mlx"
PEER = "mlx_lm.server"


@dataclass
class Run:
    """Everything one run measured; a part skipped by flag stays empty."""

    model_name: str
    max_tokens: int
    concurrency: list[int]
    logit_bias: dict[str, int]
    repeats: int
    machine: list[str] = field(default_factory=list)
    load: list[str] = field(default_factory=list)  # how busy the machine was at start
    engine: EngineResults | None = None
    flags: dict[str, str] = field(default_factory=dict)  # server name -> command line
    notes: dict[str, str] = field(default_factory=dict)  # server name -> what it reported
    cases: dict[str, dict[int, CaseResult]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # server name -> why it stopped
    prefix: tuple[CaseResult, CaseResult] | None = None
    single: dict[str, list[float]] = field(default_factory=dict)  # decode tok/s per repeat

    def single_tps(self, server: str) -> float | None:
        rates = self.single.get(server)
        return statistics.median(rates) if rates else None

    def case(self, server: str, streams: int) -> CaseResult | None:
        return self.cases.get(server, {}).get(streams)


def load_line() -> str:
    """The 1-minute load average before the bench starts: other work skews every number."""
    load = os.getloadavg()[0]
    busy = load > 0.5 * (os.cpu_count() or 1)
    warning = "; the machine was already busy, so numbers may be low and noisy" if busy else ""
    return f"load average (1 min) at start: {load:.2f}{warning}"


def machine_lines() -> list[str]:
    """Platform, cores, MLX device and the versions that matter."""
    import importlib.metadata as metadata

    import mlx.core as mx

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    info = mx.device_info() if hasattr(mx, "device_info") else {}
    name = info.get("device_name") or info.get("architecture") or "?"
    return [
        f"machine: {platform.platform()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        f"MLX {mx.__version__}, device {mx.default_device()} ({name}); "
        f"mlx-lm {version('mlx-lm')}; openai SDK {version('openai')}",
    ]


# ----- formatting helpers -----

def tps(v: float | None) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.1f}"


def ms(v: float | None, digits: int = 0) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v * 1000:.{digits}f} ms"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ok(case: CaseResult | None) -> CaseResult | None:
    return case if case is not None and case.ok else None


def _status(case: CaseResult | None) -> str:
    """What to print instead of a number for a case that has none."""
    if case is None:
        return "not run"
    if case.error and "skipped" in case.error:
        return "skipped"
    return "timed out" if case.error and "timed out" in case.error else "failed"


def _out_tps(case: CaseResult | None) -> float | None:
    return case.output_tps if _ok(case) else None


def _ttft50(case: CaseResult | None) -> float | None:
    return case.ttft(0.5) if _ok(case) else None


def _cell(
    case: CaseResult | None, value: float | None, fmt: Callable[[float | None], str] = tps
) -> str:
    return fmt(value) if _ok(case) else _status(case)


# ----- sections -----

def header_lines(run: Run) -> list[str]:
    bias = ", ".join(f'"{k}": {v}' for k, v in run.logit_bias.items())
    lines = ["# triton-mlx bench", *run.machine, *run.load,
             f"model: {run.model_name}; {run.max_tokens} new tokens per request, temperature 0, "
             f"EOS banned with logit_bias {{{bias}}}; streaming chat completions, OpenAI SDK"]
    if run.engine is not None:
        facts = run.engine.facts
        lines.append(f"raw engine: {facts.get('profile', '?')}; BLAS: {facts.get('blas', '?')}")
    for name, flags in run.flags.items():
        lines.append(f"{name}: {flags}")
        if name in run.notes:
            lines.append(f"  {run.notes[name]}")
    return lines


def _single_rows(run: Run) -> list[list[str]]:
    """Single-stream decode tok/s: [label, median, vs raw, every run], raw loops first."""
    engine = run.engine
    raw = engine.single_tps("batch_generator") if engine else None

    def runs(values: list[float]) -> str:
        return ", ".join(tps(v) for v in values)

    rows = []
    if engine:
        step = engine.single_tps("generate_step")
        rows.append(["mlx-lm `generate_step` (raw)", tps(step), ratio(step, raw),
                     runs([r["generate_step"] for r in engine.single])])
        rows.append(["mlx-lm `BatchGenerator`, batch 1 (raw)", tps(raw), ratio(raw, raw),
                     runs([r["batch_generator"] for r in engine.single])])
    for name in run.cases:
        value = run.single_tps(name)
        rows.append([f"{name}, 1 stream", tps(value) if value else "not run",
                     ratio(value, raw), runs(run.single.get(name, []))])
    return rows


def single_stream_lines(run: Run) -> list[str]:
    return [f"## Single stream: decode tok/s (tokens after the first over their time; median "
            f"of {run.repeats} runs, same chats for all)",
            *table(["", "decode tok/s", "vs raw BatchGenerator (target >= 0.97x)", "runs"],
                   _single_rows(run))]


def _tokens(case: CaseResult) -> str:
    lengths = sorted({s.tokens for s in case.streams})
    text = str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
    return text if case.usage_reported else text + " (text chunks)"


def _prompt(case: CaseResult) -> str:
    prompts = [s.prompt_tokens for s in case.streams if s.prompt_tokens is not None]
    cached = [s.cached_tokens for s in case.streams if s.cached_tokens is not None]
    text = f"{sum(prompts) / len(prompts):.0f}" if prompts else "n/a"
    return text + (f" ({sum(cached) / len(cached):.0f} cached)" if cached else "")


def sweep_lines(run: Run) -> list[str]:
    rows = []
    for streams in run.concurrency:
        for name in run.cases:
            case = run.case(name, streams)
            if not _ok(case):
                rows.append([str(streams), name, _status(case), *[""] * 6])
                continue
            rows.append([str(streams), name, tps(case.output_tps), ms(case.ttft(0.5)),
                         ms(case.ttft(0.99)), ms(case.tpot(0.5), 1), ms(case.tpot(0.99), 1),
                         _tokens(case), _prompt(case)])
    return ["## Concurrency sweep (output tok/s: all completion tokens over the case's wall "
            "time, prefill included)",
            *table(["streams", "server", "output tok/s", "TTFT p50", "TTFT p99", "TPOT p50",
                    "TPOT p99", "tokens/stream", "prompt tokens/stream"], rows)]


def comparison_lines(run: Run) -> list[str]:
    if PEER not in run.flags:
        return []
    rows = []
    for streams in run.concurrency:
        ours, peer = run.case(OURS, streams), run.case(PEER, streams)
        rows.append([
            str(streams), _cell(ours, _out_tps(ours)), _cell(peer, _out_tps(peer)),
            ratio(_out_tps(ours), _out_tps(peer)), _cell(ours, _ttft50(ours), ms),
            _cell(peer, _ttft50(peer), ms), ratio(_ttft50(ours), _ttft50(peer)),
        ])
    lines = ["## Ours / theirs (tok/s ratio: higher is better; TTFT ratio: lower is better)",
             *table(["streams", f"{OURS} tok/s", f"{PEER} tok/s", "tok/s ratio",
                     f"{OURS} TTFT p50", f"{PEER} TTFT p50", "TTFT ratio"], rows)]
    if 8 in run.concurrency:
        ours, peer = run.case(OURS, 8), run.case(PEER, 8)
        lines.append(f"TTFT p50 at 8 streams: {OURS} {_cell(ours, _ttft50(ours), ms)}, "
                     f"{PEER} {_cell(peer, _ttft50(peer), ms)} "
                     f"(ratio {ratio(_ttft50(ours), _ttft50(peer))})")
    return lines


def engine_lines(run: Run) -> list[str]:
    """Server vs engine: the server's decode throughput next to the raw BatchGenerator's."""
    if run.engine is None:
        return []
    rows = []
    for streams in run.concurrency:
        raw = run.engine.batch_tps(streams)
        ours = run.case(OURS, streams)
        decode = ours.decode_tps_sum if _ok(ours) else None
        rows.append([str(streams), tps(raw), _cell(ours, decode), ratio(decode, raw),
                     _cell(ours, _out_tps(ours))])
    return ["## Server vs engine (raw BatchGenerator in-process, decode only, after warm-up)",
            *table(["batch / streams", "raw BatchGenerator decode tok/s",
                    f"{OURS} decode tok/s (sum over streams)", f"{OURS} / raw",
                    f"{OURS} output tok/s"], rows)]


def prefix_lines(run: Run) -> list[str]:
    if run.prefix is None:
        return []
    cold, warm = run.prefix
    lines = [f"## Prefix cache ({OURS}; the same long system prompt, a different short "
             "question; TTFT)"]
    if not (cold.ok and warm.ok):
        return lines + [f"cold: {cold.error or 'ok'}; warm: {warm.error or 'ok'}"]
    c, w = cold.streams[0], warm.streams[0]
    return lines + table(["", "TTFT", "prompt tokens", "cached tokens (usage)"], [
        ["cold (system prompt never seen)", ms(c.ttft), str(c.prompt_tokens),
         str(c.cached_tokens)],
        ["warm (same system prompt again)", ms(w.ttft), str(w.prompt_tokens),
         str(w.cached_tokens)],
        ["warm / cold", ratio(w.ttft, c.ttft), "", ""],
    ])


def note_lines(run: Run) -> list[str]:
    notes = []
    for name, cases in run.cases.items():
        done = [c for c in cases.values() if c.ok]
        short = [c.concurrency for c in done if not c.all_full_length]
        if short:
            notes.append(f"{name}: some streams stopped before max_tokens at {short} streams "
                         "(the EOS ban did not hold); tok/s counts the tokens actually made")
        elif done:
            notes.append(f"{name}: every stream generated exactly {run.max_tokens} tokens "
                         "(logit_bias EOS ban honoured)")
        if any(not c.usage_reported for c in done):
            notes.append(f"{name}: no usage chunk (stream_options.include_usage ignored); "
                         "tokens counted as text chunks")
        for c in cases.values():
            if c.retried_after:
                notes.append(f"{name}, {c.concurrency} streams: the first attempt failed and "
                             f"was retried with fresh prompts: {c.retried_after}")
            if c.error:
                notes.append(f"{name}, {c.concurrency} streams: {c.error}")
    for name, why in run.failures.items():
        notes.append(f"{name}: {why}")
    if run.engine and run.engine.error:
        notes.append(f"raw engine: {run.engine.error}")
    for size, record in (run.engine.batches.items() if run.engine else []):
        if record.get("error"):
            notes.append(f"raw engine, batch {size}: {record['error']}")
    return ["## Notes", *[f"- {n}" for n in notes]] if notes else []


def readme_lines(run: Run) -> list[str]:
    """The README's Performance tables, ready to paste."""
    engine = run.engine
    single = [[label, value if label.startswith("mlx-lm") or vs == "n/a"
               else f"{value} ({vs} raw)"] for label, value, vs, _ in _single_rows(run)]

    def p50_p99(case: CaseResult | None, metric: str, digits: int = 0) -> str:
        if not _ok(case):
            return _status(case)
        values = getattr(case, metric)
        return f"{ms(values(0.5), digits)} / {ms(values(0.99), digits)}"

    rows = []
    for streams in run.concurrency:
        ours, peer = run.case(OURS, streams), run.case(PEER, streams)
        raw = engine.batch_tps(streams) if engine else None
        rows.append([
            str(streams), _cell(ours, _out_tps(ours)), _cell(peer, _out_tps(peer)),
            ratio(_out_tps(ours), _out_tps(peer)), tps(raw),
            p50_p99(ours, "ttft"), p50_p99(peer, "ttft"), ratio(_ttft50(ours), _ttft50(peer)),
            p50_p99(ours, "tpot", 1), p50_p99(peer, "tpot", 1),
        ])
    lines = ["## README (paste into the Performance section)", "",
             f"`make bench`, {datetime.date.today().isoformat()}: " + "; ".join(run.machine)
             + f"; model {run.model_name}; {run.max_tokens} new tokens per request.", ""]
    if single:
        lines += [*table([f"decode, 1 stream (median of {run.repeats})", "tok/s"], single), ""]
    lines += table(["streams", f"{OURS} tok/s", f"{PEER} tok/s", "tok/s ratio",
                    "raw BatchGenerator decode tok/s", f"{OURS} TTFT p50 / p99",
                    f"{PEER} TTFT p50 / p99", "TTFT ratio", f"{OURS} TPOT p50 / p99",
                    f"{PEER} TPOT p50 / p99"], rows)
    if run.prefix and all(c.ok for c in run.prefix):
        cold, warm = (c.streams[0] for c in run.prefix)
        lines += ["", f"Prefix cache ({OURS}, a {cold.prompt_tokens}-token prompt, mostly a "
                  f"system prompt, then the same system prompt with another question): TTFT "
                  f"cold {ms(cold.ttft)}, warm {ms(warm.ttft)} ({ratio(warm.ttft, cold.ttft)})."]
    return lines


def render(run: Run) -> str:
    sections = [header_lines(run), single_stream_lines(run), sweep_lines(run),
                comparison_lines(run), engine_lines(run), prefix_lines(run), note_lines(run),
                readme_lines(run)]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


# ----- the structured-output case (bench.structured) -----

# Issue 11's targets: constrained / unconstrained decode tok/s per (device, streams), compile p50.
STRUCTURED_TARGETS = {("cpu", 16): 0.90, ("gpu", 64): 0.85}
COMPILE_TARGET_MS = 5.0
_SIDES = ("unconstrained", "constrained")  # Round.side
_x = "{:.2f}x".format
_ms = "{:.2f} ms".format


def _range(values: list[float], fmt: Callable[[float], str] = tps) -> str:
    values = [v for v in values if not math.isnan(v)]
    return f"{fmt(min(values))}-{fmt(max(values))}" if values else "n/a"


def _spread(values: list[float], fmt: Callable[[float], str] = tps) -> str:
    """The median, then the range: ``12.3 (11.9-12.8)``."""
    kept = [v for v in values if not math.isnan(v)]
    return f"{fmt(statistics.median(kept))} ({_range(kept, fmt)})" if kept else "n/a"


def structured_decode_lines(section: Section) -> list[str]:
    rows = []
    for count in section.streams:
        sides = {s: [r for r in section.rounds if r.streams == count and r.side == s]
                 for s in _SIDES}
        if not all(sides.values()):
            rows.append([str(count), "not run", *[""] * 6])
            continue
        rates = {s: [r.decode_tps for r in rounds] for s, rounds in sides.items()}
        paired = [c.decode_tps / u.decode_tps
                  for u, c in zip(sides["unconstrained"], sides["constrained"], strict=False)
                  if u.decode_tps > 0 and not math.isnan(c.decode_tps)]
        medians = [statistics.median([v for v in rates[s] if not math.isnan(v)] or [math.nan])
                   for s in _SIDES]
        target = STRUCTURED_TARGETS.get((section.device, count))
        ttft = {s: [r.case.ttft(0.5) for r in rounds if r.case.ok] for s, rounds in sides.items()}
        tokens = " / ".join(f"{statistics.mean(r.mean_tokens for r in sides[s]):.1f}"
                            for s in _SIDES)
        stops = sum(r.finish.get("stop", 0) for r in sides["constrained"])
        total = sum(r.case.concurrency for r in sides["constrained"])
        rows.append([str(count), _spread(rates["unconstrained"]), _spread(rates["constrained"]),
                     f"{ratio(medians[1], medians[0])} ({_range(paired, _x)})",
                     f">= {target:.2f}x" if target else "",
                     " / ".join(ms(percentile(ttft[s], 0.5)) for s in _SIDES),
                     tokens, f"{stops}/{total}"])
    return [f"## Structured output: decode tok/s, every stream under a JSON schema vs none "
            f"(sum over streams; median of {section.repeats} rounds per side, min-max)",
            *table(["streams", "unconstrained", "constrained (one schema per stream)",
                    "constrained / unconstrained (per-round min-max)", "target",
                    "TTFT p50 unconstrained / constrained", "mean completion tokens "
                    "(unconstrained / constrained)", "constrained ended by the grammar"],
                   rows)]


def structured_compile_lines(section: Section) -> list[str]:
    c = section.compiled
    if c is None:
        return []
    labels = {"serving": "schema -> grammar (`response_format_grammar`, validated)",
              "engine": "grammar -> matcher (`GrammarCache.matcher`, cold)",
              "first_mask": "first token mask",
              "total": "total: a new schema until its first mask"}
    rows = []
    for step, label in labels.items():
        values = c.pooled(step)
        rows.append([label, *(_ms(percentile(values, q)) for q in (0.5, 0.99)),
                     _ms(max(values))])
    slowest = sorted(c.samples, key=lambda n: -statistics.median(c.samples[n]["total"]))[:5]
    compile_p50 = percentile([a + b for a, b in zip(c.pooled("serving"), c.pooled("engine"),
                                                    strict=True)], 0.5)
    return [f"## Structured output: grammar compile ({len(c.samples)} schemas x "
            f"{section.compile_repeats} cold compiles, {section.model}'s tokenizer, "
            f"{c.vocab_size} tokens)",
            *table(["step", "p50", "p99", "max"], rows),
            f"compile (serving + engine) p50: {_ms(compile_p50)} (target <= "
            f"{COMPILE_TARGET_MS:.0f} ms); the grammar tokenizer's build, once per model at its "
            f"first constrained request: {c.tokenizer_ms:.0f} ms",
            "slowest schemas (median total): " + ", ".join(
                f"{n} {_ms(statistics.median(c.samples[n]['total']))}" for n in slowest)]


def structured_note_lines(section: Section) -> list[str]:
    notes = [f"server: {section.flags}"] if section.flags else []
    notes += [f"{r.streams} streams, round {r.repeat + 1}, {r.side}: {r.case.error}"
              for r in section.rounds if r.case.error]
    constrained = [r for r in section.rounds if r.side == "constrained" and r.case.ok]
    if constrained:
        def count(attr: str) -> int:
            return sum(getattr(r, attr) for r in constrained)

        notes.append(
            f"constrained outputs that parse as JSON: {count('valid_json')} of "
            f"{sum(r.case.concurrency for r in constrained)} ("
            f"{sum(r.finish.get('stop', 0) for r in constrained)} ended with finish_reason "
            "stop; one completed on its last allowed token says length; the rest ran out of "
            f"max_tokens mid-object); ended with stop but not JSON: {count('stopped_invalid')}")
    if section.failure:
        notes.append(f"failed: {section.failure}")
    return ["### Notes", *[f"- {n}" for n in notes]] if notes else []


def render_structured(section: Section) -> str:
    """The structured-output case's tables, then its JSON records (one per line)."""
    head = ["## Structured output (`bench.structured`)",
            f"model {section.model}, {section.device.upper()}; {section.max_tokens} max tokens "
            f"per request, temperature 0, special tokens banned with logit_bias on both sides; "
            f"{section.schemas} schemas (bench/schemas.py)"]
    parts = [head, structured_compile_lines(section)]
    if section.rounds or section.failure:
        parts += [structured_decode_lines(section), structured_note_lines(section)]
    parts.append(["## Structured output: records (JSON lines)", "```",
                  *(json.dumps(r) for r in section.records()), "```"])
    return "\n\n".join("\n".join(p) for p in parts if p) + "\n"
