"""The command line and the order of work: engine, our server, mlx_lm.server, the structured-
output case (``bench.structured``, on a server of its own), then the report.

Only one thing holds the model at a time (the raw engine in a child process, then each server),
so on a small machine nothing competes with what is measured. Progress goes to stderr as each
case starts; the tables go to stdout at the end.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import clients, engine, servers, structured, workload
from bench.clients import CaseResult
from bench.report import OURS, PEER, Run, load_line, machine_lines, render, render_structured

DEFAULT_MODEL = servers.REPO_ROOT / "model_repository" / "SmolLM2-135M-Instruct"
_T0 = time.monotonic()


def progress(message: str) -> None:
    elapsed = int(time.monotonic() - _T0)
    print(f"[bench {elapsed // 60:02d}:{elapsed % 60:02d}] {message}", file=sys.stderr,
          flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="triton-mlx against mlx_lm.server and the raw mlx-lm engine, same model.")
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL,
                   help="an mlx-lm model folder (default: the demo model)")
    p.add_argument("--max-tokens", type=int, default=32,
                   help="tokens generated per request in the sweep (default: 32)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16],
                   help="concurrent streams per case (default: 1 4 8 16)")
    p.add_argument("--repeats", type=int, default=3,
                   help="single-stream decode runs per server and engine; the median counts "
                   "(default: 3)")
    p.add_argument("--skip-peer", action="store_true", help="do not run mlx_lm.server")
    p.add_argument("--skip-prefix", action="store_true", help="skip the prefix-cache case")
    p.add_argument("--skip-engine", action="store_true", help="skip the raw engine")
    p.add_argument("--skip-structured", action="store_true",
                   help="skip the structured-output case (bench.structured)")
    p.add_argument("--only-structured", action="store_true",
                   help="run only the structured-output case (as python -m bench.structured)")
    p.add_argument("--structured-streams", type=structured.stream_counts, default=None,
                   help="its stream counts, e.g. 1,16,64 (default: 1,16 on a CPU, 1,16,64 on "
                   "a GPU)")
    p.add_argument("--structured-max-tokens", type=int, default=None,
                   help="its tokens per request (default: 48 on a CPU, 128 on a GPU)")
    p.add_argument("--structured-repeats", type=int, default=5,
                   help="its rounds per side and stream count (default: 5)")
    p.add_argument("--server-args", default="",
                   help="extra arguments for our server, one string, e.g. "
                   "'--runtime-profile small' (the raw engine follows its --runtime-profile)")
    p.add_argument("--peer-args", default="", help="extra arguments for mlx_lm.server")
    p.add_argument("--prefix-tokens", type=int, default=1000,
                   help="length of the prefix case's system prompt (default: 1000)")
    p.add_argument("--case-timeout", type=float, default=300,
                   help="seconds one case may take before it is reported as timed out "
                   "(default: 300)")
    args = p.parse_args(argv)
    if args.max_tokens < 2 or min(args.concurrency) < 1 or args.repeats < 1:
        p.error("--max-tokens must be >= 2, --repeats and every --concurrency >= 1")
    if args.skip_structured and args.only_structured:
        p.error("--skip-structured and --only-structured exclude each other")
    if (min(args.structured_streams or [1]) < 1 or args.structured_repeats < 1
            or (args.structured_max_tokens or 2) < 2):
        p.error("--structured-streams and --structured-repeats must be >= 1, "
                "--structured-max-tokens >= 2")
    args.concurrency = sorted(set(args.concurrency))
    args.model_dir = args.model_dir.resolve()
    if not (args.model_dir / "config.json").is_file():
        p.error(f"{args.model_dir} is not a model folder (no config.json); try make demo-model")
    return args


def runtime_profile(server_args: list[str]) -> str:
    """The ``--runtime-profile`` our server is given, so the raw engine can use the same."""
    for i, arg in enumerate(server_args):
        if arg == "--runtime-profile" and i + 1 < len(server_args):
            return server_args[i + 1]
        if arg.startswith("--runtime-profile="):
            return arg.split("=", 1)[1]
    return "auto"


def load_tokenizer(model_dir: Path) -> Any:
    """The model's tokenizer, with the EOS ids both servers stop on."""
    from mlx_lm.utils import load_config
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    config = load_config(model_dir)
    return mlx_load_tokenizer(model_dir, eos_token_ids=config.get("eos_token_id"))


def warm_up(spec: servers.ServerSpec, args: argparse.Namespace, bias: dict[str, int]) -> None:
    """One request, then a few at once: the first measured case pays for nothing."""
    for chats in (workload.warmup_messages(1), workload.warmup_messages(min(4, args.slots))):
        case = clients.run_case(spec.name, spec.base_url, spec.model, chats, 4, bias,
                                args.case_timeout)
        if case.error:
            raise servers.ServerFailed(f"warm-up failed: {case.error}")


def single_stream(spec: servers.ServerSpec, args: argparse.Namespace,
                  bias: dict[str, int]) -> list[float]:
    """Decode tok/s of one stream at a time, ``repeats`` times (the raw engine's chats)."""
    progress(f"{spec.name}: single stream x {args.repeats}, {args.max_tokens} tokens")
    rates = []
    for repeat in range(args.repeats):
        case = clients.run_case(spec.name, spec.base_url, spec.model,
                                [workload.single_messages(repeat)], args.max_tokens, bias,
                                args.case_timeout)
        if not case.ok:
            raise servers.ServerFailed(f"single stream failed: {case.error}")
        rates.append(case.streams[0].decode_tps)
    return rates


def sweep(spec: servers.ServerSpec, args: argparse.Namespace,
          bias: dict[str, int]) -> dict[int, CaseResult]:
    """Every concurrency level in turn; after a timeout the larger levels are not tried."""
    cases: dict[int, CaseResult] = {}
    for streams in args.concurrency:
        if any(c.error and "timed out" in c.error for c in cases.values()):
            cases[streams] = CaseResult(spec.name, streams, args.max_tokens,
                                        error="skipped: a smaller case timed out")
            continue
        progress(f"{spec.name}: {streams} streams x {args.max_tokens} tokens")
        case = clients.run_case(
            spec.name, spec.base_url, spec.model, workload.sweep_messages(streams),
            args.max_tokens, bias, args.case_timeout)
        if case.error and "timed out" not in case.error:
            # A stream that failed (a dropped connection, say) is retried once, with fresh
            # prompts; the first failure stays in the report's notes.
            progress(f"{spec.name}: {streams} streams failed ({case.error}); retrying once")
            retry = clients.run_case(
                spec.name, spec.base_url, spec.model, workload.sweep_messages(streams, 1),
                args.max_tokens, bias, args.case_timeout)
            retry.retried_after = case.error
            case = retry
        cases[streams] = case
    return cases


def prefix_case(spec: servers.ServerSpec, args: argparse.Namespace, bias: dict[str, int],
                tokenizer: Any) -> tuple[CaseResult, CaseResult]:
    """TTFT of a never-seen long system prompt, then of the same one with a new question."""
    system = workload.system_prompt(tokenizer, args.prefix_tokens)
    results = []
    for label, question in zip(("cold", "warm"), workload.QUESTIONS, strict=True):
        progress(f"{spec.name}: prefix cache, {label}")
        results.append(clients.run_case(
            spec.name, spec.base_url, spec.model,
            [workload.prefix_messages(system, question)], 4, bias, args.case_timeout))
    return results[0], results[1]


def serve_and_measure(spec: servers.ServerSpec, run: Run, args: argparse.Namespace,
                      bias: dict[str, int], tokenizer: Any, log_dir: Path) -> None:
    run.flags[spec.name] = "python " + spec.flags
    progress(f"{spec.name}: starting")
    try:
        with servers.running(spec, log_dir):
            if spec.name == OURS:
                card = servers.get_json(f"{spec.base_url}/models/{spec.model}") or {}
                profile = card.get("runtime_profile")
                if profile:
                    run.notes[spec.name] = (f"runtime profile {profile.get('name')}: weights "
                                            f"{profile.get('weights')}; BLAS {profile.get('blas')}")
            if spec.name == PEER:
                run.notes[spec.name] = ("weights as stored in the folder (mlx-lm has no "
                                        "runtime profile); other settings at mlx-lm's defaults")
            progress(f"{spec.name}: warming up")
            warm_up(spec, args, bias)
            run.single[spec.name] = single_stream(spec, args, bias)
            run.cases[spec.name] = sweep(spec, args, bias)
            if spec.name == OURS and not args.skip_prefix:
                run.prefix = prefix_case(spec, args, bias, tokenizer)
    except servers.ServerFailed as exc:
        run.failures[spec.name] = str(exc)
        run.cases.setdefault(spec.name, {})
    progress(f"{spec.name}: stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = load_line()  # before this process adds its own
    server_args = shlex.split(args.server_args)
    args.slots = max(args.concurrency)
    tokenizer = load_tokenizer(args.model_dir)
    bias = workload.eos_ban(tokenizer)
    run = Run(args.model_dir.name, args.max_tokens, args.concurrency, bias, args.repeats,
              machine_lines(), [load])

    if args.only_structured:
        section = run_structured(args, server_args)
        progress("done")
        print("\n".join(["# triton-mlx bench: structured output", *run.machine, *run.load, ""]))
        print(render_structured(section), end="")
        return int(structured.failed(section))
    if not args.skip_engine:
        progress("raw engine (child process)")
        run.engine = engine.run_engine(
            args.model_dir, args.max_tokens, args.concurrency, args.repeats,
            runtime_profile(server_args), args.case_timeout)
    with tempfile.TemporaryDirectory(prefix="triton-mlx-bench-") as tmp:
        repository = Path(tmp) / "repository"
        repository.mkdir()
        # Specs are made just before each start, so their free ports are still free.
        makers = [lambda: servers.ours(args.model_dir, repository, args.slots, server_args)]
        if not args.skip_peer:
            makers.append(
                lambda: servers.peer(args.model_dir, args.slots, shlex.split(args.peer_args)))
        for make in makers:
            serve_and_measure(make(), run, args, bias, tokenizer, Path(tmp))
    # Printed before the structured case runs: nothing there can lose these tables.
    print(render(run), end="", flush=True)
    failed = bool(run.failures)
    if not args.skip_structured:
        section = run_structured(args, server_args)
        print("\n" + render_structured(section), end="")
        failed = failed or structured.failed(section)
    progress("done")
    return int(failed)


def run_structured(args: argparse.Namespace, server_args: list[str]) -> structured.Section:
    """The structured-output case (``bench.structured``), against a server of its own."""
    progress("structured output (bench.structured)")
    return structured.run_section(
        args.model_dir, streams=args.structured_streams, repeats=args.structured_repeats,
        max_tokens=args.structured_max_tokens, timeout=args.case_timeout,
        server_args=server_args, progress=progress)
