"""``python -m bench.structured``: what constrained decoding costs, over HTTP and at compile.

Issue 11's targets: decode tok/s with every stream under a JSON schema >= 0.9x the same streams
unconstrained at 16 streams on the CPU (>= 0.85x at 64 on a GPU); grammar compile p50 <= 5 ms
over real-world schemas (``bench.schemas``). Two measurements:

1. **Compile**, in this process, through the server's own code on the model's tokenizer:
   ``response_format_grammar`` (serving: schema to a validated grammar), ``GrammarCache.matcher``
   on a cache of one grammar (engine: every call misses, its counter proves it), then the first
   token mask; each schema cold ``--compile-repeats`` times. The grammar tokenizer's one-off
   build (at a model's first constrained request) is timed once.
2. **Decode**, over HTTP against ``python -m triton_mlx`` (started as ``bench.servers`` does):
   streaming chat completions, greedy, ``--max-tokens`` each, with the EOS ban of the rest of
   ``make bench`` (a complete JSON still ends: the end token is then all its grammar allows).
   Per stream count, ``--repeats`` rounds of each side, alternating which goes first:
   unconstrained, and the same requests plus ``response_format: json_schema``, one schema per
   stream (the batch mixes grammars), rotating through the set. Both sides send the same prompts
   (each asks for its schema's JSON), tagged per round and side so none is served whole from the
   prefix cache; a warm-up compiles every schema first, so rounds measure masking, not
   compiling. Decode tok/s is each stream's tokens after its first over their time, summed over
   streams (as ``bench.clients``). A grammar may end its JSON before ``--max-tokens``: the sides
   are compared by rate, and each side's mean completion tokens are shown.

Progress goes to stderr; the tables and the JSON records to stdout (and ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import servers
from bench.clients import CaseResult, StreamResult
from bench.report import OURS, load_line, machine_lines, render_structured
from bench.schemas import SCHEMAS, Schema
from bench.workload import Messages, eos_ban

DEFAULT_MODEL = servers.REPO_ROOT / "model_repository" / "SmolLM2-135M-Instruct"
SIDES = ("unconstrained", "constrained")
Progress = Callable[[str], None]


def response_format(schema: Schema) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": schema.name, "schema": schema.schema}}


def prompt(schema: Schema, tag: str) -> Messages:
    return [{"role": "user", "content": f"(request {tag}) Reply with JSON only: {schema.ask}."}]


# ----- compile -----

@dataclass
class CompileResult:
    tokenizer_ms: float  # the grammar tokenizer's build, once per model
    vocab_size: int
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # name->step->ms

    def pooled(self, step: str) -> list[float]:
        return [v for steps in self.samples.values() for v in steps[step]]


COMPILE_STEPS = ("serving", "engine", "first_mask", "total")


def compile_bench(model_dir: Path, repeats: int, progress: Progress) -> CompileResult:
    """Every schema compiled cold ``repeats`` times through the server's code path."""
    import llguidance.numpy as llg_numpy

    from triton_mlx.engine.constraints import GrammarCache
    from triton_mlx.engine.tokenizer_access import grammar_tokenizer
    from triton_mlx.serving.structured import response_format_grammar

    tokenizer = load_tokenizer(model_dir)
    eos_ids = sorted(tokenizer.eos_token_ids)  # as the engine passes them
    progress(f"compile: grammar tokenizer of {model_dir.name}")
    start = time.perf_counter()
    llg_tokenizer = grammar_tokenizer(tokenizer, eos_ids)
    result = CompileResult((time.perf_counter() - start) * 1000, llg_tokenizer.vocab_size)
    bitmask = llg_numpy.allocate_token_bitmask(1, llg_tokenizer.vocab_size)
    cache = GrammarCache(tokenizer, eos_ids, capacity=1)  # every schema below evicts the last
    cache.matcher(response_format_grammar({"type": "json_object"}))  # builds its tokenizer
    progress(f"compile: {len(SCHEMAS)} schemas x {repeats}, each cold")
    for _ in range(repeats):
        for schema in SCHEMAS:
            before = cache.compilations
            t0 = time.perf_counter()
            grammar = response_format_grammar(response_format(schema))
            t1 = time.perf_counter()
            matcher = cache.matcher(grammar)
            t2 = time.perf_counter()
            llg_numpy.fill_next_token_bitmask(matcher, bitmask, 0)
            t3 = time.perf_counter()
            if cache.compilations != before + 1 or matcher.is_error():
                raise RuntimeError(f"{schema.name}: not a cold compile, or the matcher failed: "
                                   f"{matcher.get_error()}")
            steps = result.samples.setdefault(schema.name, {s: [] for s in COMPILE_STEPS})
            for step, value in zip(COMPILE_STEPS, (t1 - t0, t2 - t1, t3 - t2, t3 - t0),
                                   strict=True):
                steps[step].append(value * 1000)
    return result


def load_tokenizer(model_dir: Path) -> Any:
    """The tokenizer the server loads (``load_model_folder``: mlx-lm's, with its EOS ids)."""
    from mlx_lm.utils import load_config
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    config = load_config(model_dir)
    return mlx_load_tokenizer(model_dir, eos_token_ids=config.get("eos_token_id"))


# ----- decode -----

@dataclass
class Round:
    """One side of one round: ``streams`` requests sent at once."""

    streams: int
    repeat: int
    side: str
    case: CaseResult
    valid_json: int = 0  # outputs that parse as JSON
    stopped_invalid: int = 0  # ended with "stop" yet not JSON (under a grammar: a bug)
    finish: dict[str, int] = field(default_factory=dict)

    @property
    def decode_tps(self) -> float:
        rates = [s.decode_tps for s in self.case.streams if not math.isnan(s.decode_tps)]
        return sum(rates) if self.case.ok and rates else math.nan

    @property
    def mean_tokens(self) -> float:
        counts = [s.tokens for s in self.case.streams]
        return statistics.mean(counts) if counts else math.nan

    def record(self) -> dict[str, Any]:
        c = self.case
        return {"kind": "decode", "streams": self.streams, "repeat": self.repeat,
                "side": self.side, "decode_tps": _num(self.decode_tps),
                "output_tps": _num(c.output_tps) if c.ok else None,
                "ttft_p50_ms": _num(c.ttft(0.5) * 1000) if c.ok else None,
                "mean_completion_tokens": _num(self.mean_tokens), "finish": self.finish,
                "valid_json": self.valid_json, "stopped_invalid": self.stopped_invalid,
                "error": c.error}


async def _stream(client: Any, model: str, messages: Messages, max_tokens: int,
                  bias: dict[str, int], fmt: dict | None) -> tuple[StreamResult, str]:
    """One streaming chat completion, timed as ``bench.clients.stream_chat`` times it."""
    started = time.perf_counter()
    stamps: list[float] = []
    text: list[str] = []
    usage = finish = None
    extra = {"response_format": fmt} if fmt else {}
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, logit_bias=bias, **extra)
    async for chunk in stream:
        if chunk.choices:
            choice = chunk.choices[0]
            if choice.delta and choice.delta.content:
                stamps.append(time.perf_counter())
                text.append(choice.delta.content)
            finish = choice.finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    if not stamps or usage is None:
        raise RuntimeError("the stream carried no text or no usage")
    return StreamResult(started=started, first=stamps[0], last=stamps[-1],
                        ended=time.perf_counter(), chunks=len(stamps),
                        tokens=usage.completion_tokens, usage_reported=True,
                        finish_reason=finish, prompt_tokens=usage.prompt_tokens), "".join(text)


async def _send(spec: servers.ServerSpec, requests: list[tuple[Messages, dict | None]],
                max_tokens: int, bias: dict[str, int], timeout: float
                ) -> tuple[CaseResult, list[str]]:
    """Send every request at once; wait for all of them (or the timeout)."""
    from openai import AsyncOpenAI

    case = CaseResult(OURS, len(requests), max_tokens)
    client = AsyncOpenAI(base_url=spec.base_url, api_key="bench", timeout=timeout + 60,
                         max_retries=0)
    started = time.perf_counter()
    tasks = [asyncio.create_task(_stream(client, spec.model, m, max_tokens, bias, f))
             for m, f in requests]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    results = [t.result() for t in tasks if t in done and t.exception() is None]
    failures = [t.exception() for t in done if t.exception() is not None]
    case.streams = [r[0] for r in results]
    if case.streams:
        case.elapsed = max(s.ended for s in case.streams) - started
    if pending:
        case.error = f"timed out after {timeout:.0f} s ({len(pending)} streams unfinished)"
    elif failures:
        case.error = f"{len(failures)} streams failed: {failures[0]!r}"[:400]
    await client.close()
    return case, [r[1] for r in results]


def run_round(spec: servers.ServerSpec, streams: int, repeat: int, side: str, max_tokens: int,
              bias: dict[str, int], timeout: float) -> Round:
    """Stream i of round ``repeat`` asks for schema ``(repeat * streams + i) % len(SCHEMAS)``."""
    chosen = [SCHEMAS[(repeat * streams + i) % len(SCHEMAS)] for i in range(streams)]
    tag = f"{streams}.{repeat}.{SIDES.index(side)}"
    requests = [(prompt(s, f"{tag}.{i}"), response_format(s) if side == "constrained" else None)
                for i, s in enumerate(chosen)]
    case, texts = asyncio.run(_send(spec, requests, max_tokens, bias, timeout))
    result = Round(streams, repeat, side, case)
    for stream, text in zip(case.streams, texts, strict=True):
        reason = stream.finish_reason or "none"
        result.finish[reason] = result.finish.get(reason, 0) + 1
        try:
            json.loads(text)
            result.valid_json += 1
        except ValueError:
            result.stopped_invalid += reason == "stop"
    return result


def warm_up(spec: servers.ServerSpec, slots: int, bias: dict[str, int], timeout: float) -> None:
    """A plain request, then every schema once (2 tokens): each grammar is compiled and cached
    before anything is measured, and the grammar tokenizer is built."""
    requests: list[tuple[Messages, dict | None]] = [(prompt(SCHEMAS[0], "warm-up"), None)]
    requests += [(prompt(s, f"warm-up.{i}"), response_format(s)) for i, s in enumerate(SCHEMAS)]
    for start in range(0, len(requests), slots):
        case, _ = asyncio.run(_send(spec, requests[start:start + slots], 2, bias, timeout))
        if case.error:
            raise servers.ServerFailed(f"warm-up failed: {case.error}")


def decode_bench(spec: servers.ServerSpec, streams: list[int], repeats: int, max_tokens: int,
                 bias: dict[str, int], timeout: float, progress: Progress) -> list[Round]:
    rounds: list[Round] = []
    for count in streams:
        for repeat in range(repeats):
            for side in (SIDES if repeat % 2 == 0 else SIDES[::-1]):
                progress(f"decode: {count} streams, round {repeat + 1}/{repeats}, {side}")
                rounds.append(run_round(spec, count, repeat, side, max_tokens, bias, timeout))
                if rounds[-1].case.error:
                    progress(f"decode: {rounds[-1].case.error}")
                    if "timed out" in rounds[-1].case.error:
                        return rounds  # larger stream counts would time out too
    return rounds


# ----- one section, as ``make bench`` runs it -----

@dataclass
class Section:
    model: str
    device: str  # "cpu" or "gpu"
    streams: list[int]
    repeats: int
    max_tokens: int
    compile_repeats: int
    schemas: int = len(SCHEMAS)
    compiled: CompileResult | None = None
    rounds: list[Round] = field(default_factory=list)
    flags: str = ""
    failure: str | None = None

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{
            "kind": "setup", "model": self.model, "device": self.device, "streams": self.streams,
            "repeats": self.repeats, "max_tokens": self.max_tokens, "server": self.flags,
            "failure": self.failure}]
        if self.compiled:
            out.append({"kind": "tokenizer", "build_ms": round(self.compiled.tokenizer_ms, 1),
                        "vocab_size": self.compiled.vocab_size})
            out += [{"kind": "compile", "schema": name,
                     **{f"{step}_ms": [round(v, 3) for v in values]
                        for step, values in steps.items()}}
                    for name, steps in self.compiled.samples.items()]
        return out + [r.record() for r in self.rounds]


def run_section(model_dir: Path, *, streams: list[int] | None = None, repeats: int = 5,
                max_tokens: int | None = None, compile_repeats: int = 5, timeout: float = 300,
                server_args: list[str] | None = None, skip_decode: bool = False,
                progress: Progress | None = None) -> Section:
    """Compile, then decode against a server of our own; a server failure is in ``failure``."""
    import mlx.core as mx

    say = progress or _progress
    gpu = mx.default_device() == mx.gpu
    streams = sorted(set(streams or ([1, 16, 64] if gpu else [1, 16])))
    section = Section(model_dir.name, "gpu" if gpu else "cpu", streams, repeats,
                      max_tokens or (128 if gpu else 48), compile_repeats)
    try:
        section.compiled = compile_bench(model_dir, compile_repeats, say)
    except Exception as exc:  # noqa: BLE001 - reported; the decode rounds still run
        section.failure = f"compile: {exc!r}"
    if skip_decode:
        return section
    bias = eos_ban(load_tokenizer(model_dir))
    with tempfile.TemporaryDirectory(prefix="triton-mlx-bench-structured-") as tmp:
        repository = Path(tmp) / "repository"
        repository.mkdir()
        spec = servers.ours(model_dir, repository, max(streams), server_args or [])
        section.flags = "python " + spec.flags
        say("decode: starting triton-mlx")
        try:
            with servers.running(spec, Path(tmp)):
                say(f"decode: warming up ({len(SCHEMAS)} schemas compiled once)")
                warm_up(spec, max(streams), bias, timeout)
                section.rounds = decode_bench(spec, streams, repeats, section.max_tokens, bias,
                                              timeout, say)
        except servers.ServerFailed as exc:
            section.failure = "; ".join(filter(None, [section.failure, str(exc)]))
    return section


def failed(section: Section) -> bool:
    """The server failed, or a round did (timed out, a stream refused or dropped)."""
    return bool(section.failure) or any(r.case.error for r in section.rounds)


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 3)


_T0 = time.monotonic()


def _progress(message: str) -> None:
    elapsed = int(time.monotonic() - _T0)
    print(f"[structured {elapsed // 60:02d}:{elapsed % 60:02d}] {message}", file=sys.stderr,
          flush=True)


# ----- command line -----

def stream_counts(text: str) -> list[int]:
    return [int(part) for part in text.replace(" ", ",").split(",") if part]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.structured",
                                description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--streams", type=stream_counts, default=None,
                   help="stream counts, e.g. 1,16,64 (default: 1,16 on a CPU, 1,16,64 on a GPU)")
    p.add_argument("--repeats", type=int, default=5, help="rounds per side (default: 5)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="per request (default: 48 on a CPU, 128 on a GPU)")
    p.add_argument("--compile-repeats", type=int, default=5)
    p.add_argument("--compile-only", action="store_true", help="skip the decode rounds")
    p.add_argument("--server-args", default="", help="extra arguments for our server")
    p.add_argument("--case-timeout", type=float, default=300)
    p.add_argument("--json", type=Path, help="also write the records here (JSON lines)")
    args = p.parse_args(argv)
    if min(args.streams or [1]) < 1 or (args.max_tokens or 2) < 2 or args.repeats < 1:
        p.error("every --streams and --repeats must be >= 1, --max-tokens >= 2")
    if not (args.model_dir / "config.json").is_file():
        p.error(f"{args.model_dir} is not a model folder (no config.json)")
    print("\n".join(["# triton-mlx bench: structured output", *machine_lines(), load_line()]))
    section = run_section(args.model_dir.resolve(), streams=args.streams, repeats=args.repeats,
                          max_tokens=args.max_tokens, compile_repeats=args.compile_repeats,
                          timeout=args.case_timeout, server_args=shlex.split(args.server_args),
                          skip_decode=args.compile_only)
    print(render_structured(section), end="")
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in section.records()))
    return int(failed(section))


if __name__ == "__main__":
    raise SystemExit(main())
