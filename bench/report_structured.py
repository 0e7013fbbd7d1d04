"""The structured-output case's tables (``bench.structured``), apart from the chat report.

Issue 11's targets: constrained / unconstrained decode tok/s per (device, streams), and the
grammar compile p50. Each figure is the median over rounds with its min-max range.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.clients import percentile
from bench.stats import ms, ratio, table, tps

if TYPE_CHECKING:
    from bench.structured import Section

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
