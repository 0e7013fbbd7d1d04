"""Tables for the terminal and for the README, from the rounds of one run.

Every figure is the median over rounds with its min-max range, and every number says what it
counts: output tok/s is all completion tokens of a case over its wall time (prefill included),
decode tok/s excludes the first token, ratios are A/B (tok/s: higher is better; TTFT: lower is
better), given as the median of per-round ratios with their range, and as the ratio of the
medians. A case that failed or timed out is printed as such, with its failed requests.
"""

from __future__ import annotations

import datetime
import statistics

from bench.machine import load_line, machine_lines
from bench.report_structured import render_structured
from bench.results import BATCH_ONE, GENERATE_STEP, OURS, PEER, RAW, Measure, Run
from bench.stats import ms, show, show_ms, show_ratio, table, tps
from bench.targets import target_lines

__all__ = ["OURS", "PEER", "Run", "load_line", "machine_lines", "render", "render_structured"]

_LABELS = {GENERATE_STEP: "mlx-lm `generate_step` (raw)",
           BATCH_ONE: "mlx-lm `BatchGenerator`, batch 1 (raw)",
           RAW: "raw `BatchGenerator`", OURS: OURS, PEER: PEER}


def _status(rounds: list[Measure]) -> str:
    """What to print instead of a number for a case with no successful round."""
    if not rounds:
        return "not run"
    errors = [m.error or "" for m in rounds]
    if all(e.startswith("skipped") for e in errors):
        return "skipped"
    return "timed out" if any("timed out" in e for e in errors) else "failed"


def _ok_rounds(rounds: list[Measure]) -> str:
    return f"{sum(m.ok for m in rounds)}/{len(rounds)}"


# ----- sections -----

def header_lines(run: Run) -> list[str]:
    bias = ", ".join(f'"{k}": {v}' for k, v in run.logit_bias.items())
    lines = ["# triton-mlx bench", *run.machine, *run.load,
             f"model: {run.model_name}; {run.max_tokens} new tokens per request, temperature 0, "
             f"EOS banned with logit_bias {{{bias}}}; streaming chat completions, OpenAI SDK",
             f"method: every system up at once, measured in turn within each round "
             f"({_rounds_text(run)}); figures are the median over rounds (min-max)"]
    if run.engine_facts:
        facts = run.engine_facts
        lines.append(f"raw engine: {facts.get('profile', '?')}; BLAS: {facts.get('blas', '?')}; "
                     f"device {facts.get('device', '?')}")
    for name, flags in run.flags.items():
        lines.append(f"{name}: {flags}")
        if name in run.notes:
            lines.append(f"  {run.notes[name]}")
    return lines


def single_stream_lines(run: Run) -> list[str]:
    systems = run.systems("single")
    if not systems:
        return []
    rows = []
    for system in systems:
        rounds = run.rounds(system)
        decode = run.spread(system, "decode_tps")
        ttft = run.spread(system, "ttft_p50")
        every = ", ".join(tps(v) for v in run.values(system, "decode_tps"))
        rows.append([_LABELS[system], show(decode) if decode else _status(rounds),
                     show_ms(ttft) if system in (OURS, PEER) else "", _ok_rounds(rounds), every])
    lines = [f"## Single stream: decode tok/s (tokens after the first over their time), "
             f"{run.repeats} rounds, the same chat for every system in a round",
             *table(["", "decode tok/s", "TTFT", "rounds ok", "every round"], rows)]
    pairs = [((OURS, "decode_tps"), (GENERATE_STEP, "decode_tps")),
             ((OURS, "decode_tps"), (BATCH_ONE, "decode_tps")),
             ((OURS, "decode_tps"), (PEER, "decode_tps")),
             ((PEER, "decode_tps"), (GENERATE_STEP, "decode_tps")),
             ((BATCH_ONE, "decode_tps"), (GENERATE_STEP, "decode_tps")),
             ((OURS, "ttft_p50"), (PEER, "ttft_p50"))]
    ratios = [[f"{a[0]} / {b[0]} {'TTFT' if a[1] == 'ttft_p50' else 'decode'}",
               show_ratio(run.ratio(a, b))]
              for a, b in pairs if a[0] in systems and b[0] in systems]
    if ratios:
        lines += ["", *table(["ratio (per-round median (min-max); of medians)", "value"],
                             ratios)]
    return lines


def _prompt_tokens(rounds: list[Measure]) -> str:
    for m in rounds:
        prompts = [s.prompt_tokens for s in (m.case.streams if m.case else [])
                   if s.prompt_tokens is not None]
        if prompts:
            return f"{sum(prompts) / len(prompts):.0f}"
    return ""


def sweep_lines(run: Run) -> list[str]:
    if not run.sweep:
        return []
    rows = []
    for streams in run.concurrency:
        for system in run.systems("sweep"):
            rounds = run.rounds(system, streams)
            failed, sent = run.failed(system, streams)
            fail = f"{failed}/{sent}" if system != RAW else ""
            output = run.spread(system, "output_tps", streams)
            if output is None:
                rows.append([str(streams), _LABELS[system], _status(rounds), *[""] * 5, fail,
                             _ok_rounds(rounds), ""])
                continue
            med = {f: run.spread(system, f, streams) for f in ("ttft_p99", "tpot_p99")}
            rows.append([
                str(streams), _LABELS[system], show(output),
                show(run.spread(system, "decode_tps", streams)),
                show_ms(run.spread(system, "ttft_p50", streams)),
                ms(med["ttft_p99"].median) if med["ttft_p99"] else "",
                show_ms(run.spread(system, "tpot_p50", streams), 1),
                ms(med["tpot_p99"].median, 1) if med["tpot_p99"] else "",
                fail, _ok_rounds(rounds), _prompt_tokens(rounds)])
    procs = ", ".join(f"{n} at {s}" for s, n in run.client_processes.items() if n > 1)
    return [f"## Concurrency sweep, {run.sweep_repeats} rounds per level (median (min-max) "
            "over rounds; p99 columns: median only)",
            *table(["streams", "system", "output tok/s", "decode tok/s", "TTFT p50",
                    "TTFT p99", "TPOT p50", "TPOT p99", "failed / requests", "rounds ok",
                    "prompt tokens/stream"], rows),
            "client processes: " + (procs or "one (every level)")]


def ttft_part_lines(run: Run) -> list[str]:
    """Our TTFT taken apart with the server's own metrics (``bench.server_timing``)."""
    rows = []
    for streams in run.concurrency:
        spreads = [run.spread(OURS, f, streams) for f in
                   ("ttft_mean_ms", "server_ttft_ms", "queue_ms", "prefill_ms")]
        if spreads[0] is None or spreads[1] is None:
            continue
        before = [c - s for c, s in zip(run.values(OURS, "ttft_mean_ms", streams),
                                        run.values(OURS, "server_ttft_ms", streams),
                                        strict=True) if c is not None and s is not None]
        rows.append([str(streams), *(f"{x.median:.0f}" if x else "" for x in spreads[:2]),
                     f"{statistics.median(before):.0f}" if before else "",
                     *(f"{x.median:.0f}" if x else "" for x in spreads[2:])])
    if not rows:
        return []
    return [f"## Where {OURS}'s TTFT went (means over each case's requests, ms; median over "
            "rounds)",
            *table(["streams", "client TTFT", "server TTFT (from submission)",
                    "before submission (client, HTTP, template, tokens)",
                    "queue (to a batch slot)", "prefill (to first text)"], rows)]


def sweep_ratio_lines(run: Run) -> list[str]:
    systems = run.systems("sweep")
    pairs = [("output tok/s ours / mlx_lm.server", (OURS, "output_tps"), (PEER, "output_tps")),
             ("decode ours / raw decode", (OURS, "decode_tps"), (RAW, "decode_tps")),
             ("output tok/s ours / raw decode", (OURS, "output_tps"), (RAW, "decode_tps")),
             ("TTFT p50 ours / mlx_lm.server", (OURS, "ttft_p50"), (PEER, "ttft_p50"))]
    pairs = [p for p in pairs if p[1][0] in systems and p[2][0] in systems]
    if not pairs:
        return []
    rows = [[str(streams), *(show_ratio(run.ratio(a, b, streams)) for _, a, b in pairs)]
            for streams in run.concurrency]
    return ["## Sweep ratios (per-round median (min-max); of medians)",
            *table(["streams", *(label for label, _, _ in pairs)], rows)]


def prefix_lines(run: Run) -> list[str]:
    if run.prefix is None:
        return []
    cold, warm = run.prefix
    lines = [f"## Prefix cache ({OURS}; the same long system prompt, a different short "
             "question; TTFT, one request each)"]
    if not (cold.ok and warm.ok):
        return lines + [f"cold: {cold.error or 'ok'}; warm: {warm.error or 'ok'}"]
    c, w = cold.streams[0], warm.streams[0]
    return lines + table(["", "TTFT", "prompt tokens", "cached tokens (usage)"], [
        ["cold (system prompt never seen)", ms(c.ttft), str(c.prompt_tokens),
         str(c.cached_tokens)],
        ["warm (same system prompt again)", ms(w.ttft), str(w.prompt_tokens),
         str(w.cached_tokens)],
        ["warm / cold", f"{w.ttft / c.ttft:.2f}x", "", ""],
    ])


DEFINITIONS = [
    "decode tok/s: for a server, the sum over streams of each stream's tokens after its first "
    "over the time from its first to its last text chunk (`decode_tps_sum`); for the raw "
    "engine, the tokens after the step in which every sequence had its first, over their time; "
    "single stream: the one stream's (or `generate_step`'s) tokens after the first over their "
    "time",
    "output tok/s: all completion tokens over the case's wall time, from the first request sent "
    "to the last stream closed (prefill and TTFT included); raw engine: from insert to the "
    "last token",
    "ratios pair the systems' measurements of the same round (seconds apart); shown as the "
    "median of the per-round ratios (min-max), and as the ratio of the medians",
    "order within a round: single stream generate_step, BatchGenerator b1, triton-mlx, "
    "mlx_lm.server; sweep triton-mlx, mlx_lm.server, raw BatchGenerator; reversed in every "
    "other round; the rest idle",
]


def note_lines(run: Run) -> list[str]:
    notes = list(DEFINITIONS)
    for name in (OURS, PEER):
        cases = [m.case for rounds in ([run.rounds(name)] + [run.rounds(name, s) for s in
                                                              run.sweep])
                 for m in rounds if m.case is not None and m.case.ok]
        short = sorted({c.concurrency for c in cases if not c.all_full_length})
        if short:
            notes.append(f"{name}: some streams stopped before max_tokens at {short} streams "
                         "(the EOS ban did not hold); tok/s counts the tokens actually made")
        elif cases:
            notes.append(f"{name}: every stream generated exactly {run.max_tokens} tokens "
                         "(logit_bias EOS ban honoured)")
        if any(not c.usage_reported for c in cases):
            notes.append(f"{name}: no usage chunk (stream_options.include_usage ignored); "
                         "tokens counted as text chunks")
    for section, levels in [("single stream", {None: run.single}),
                            ("sweep", {s: v for s, v in run.sweep.items()})]:
        for streams, systems in levels.items():
            for rounds in systems.values():
                for m in rounds:
                    if m.error and not m.error.startswith("skipped"):
                        where = section if streams is None else f"{streams} streams"
                        notes.append(f"{m.system}, {where}, round {m.round + 1}: {m.error}")
    notes += run.warnings
    notes += [f"{name}: {why}" for name, why in run.failures.items()]
    for name, (cpu, wall) in run.idle_cpu.items():
        if wall > 0:
            notes.append(f"{name} while idle (others measured): {cpu:.2f} s CPU in {wall:.1f} s "
                         f"({100 * cpu / wall:.1f}% of one core)")
    return ["## Notes", *[f"- {n}" for n in notes]]


def _rounds_text(run: Run) -> str:
    parts = [f"{run.repeats} single-stream rounds"] if run.single else []
    parts += [f"{run.sweep_repeats} rounds per sweep level"] if run.sweep else []
    return " and ".join(parts) or "no rounds"


def readme_lines(run: Run) -> list[str]:
    """The README's Performance tables, ready to paste."""
    lines = ["## README (paste into the Performance section)", "",
             f"`python -m bench`, {datetime.date.today().isoformat()}: " + "; ".join(run.machine)
             + f"; model {run.model_name}; {run.max_tokens} new tokens per request; median "
             f"(min-max) over {_rounds_text(run)}, systems interleaved.", ""]
    single = [[_LABELS[s], show(run.spread(s, "decode_tps"))] for s in run.systems("single")]
    if single:
        lines += [*table(["decode, 1 stream", "tok/s"], single), ""]
    rows = []
    for streams in run.concurrency if run.sweep else []:
        failed, sent = run.failed(PEER, streams)
        peer = show(run.spread(PEER, "output_tps", streams)) if PEER in run.flags else "not run"
        rows.append([
            str(streams), show(run.spread(OURS, "output_tps", streams)),
            peer + (f" ({failed}/{sent} failed)" if failed else ""),
            show(run.spread(RAW, "decode_tps", streams)),
            show(run.spread(OURS, "decode_tps", streams)),
            show_ms(run.spread(OURS, "ttft_p50", streams)),
            show_ms(run.spread(PEER, "ttft_p50", streams)) if PEER in run.flags else "not run"])
    if rows:
        lines += table(["streams", f"{OURS} output tok/s", f"{PEER} output tok/s",
                        "raw `BatchGenerator` decode tok/s", f"{OURS} decode tok/s (sum)",
                        f"{OURS} TTFT p50", f"{PEER} TTFT p50"], rows)
    return lines


def render(run: Run) -> str:
    sections = [header_lines(run), single_stream_lines(run), sweep_lines(run),
                sweep_ratio_lines(run), ttft_part_lines(run), target_lines(run),
                prefix_lines(run), note_lines(run), readme_lines(run)]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"
