"""The command line and the order of work: start every compared system (the raw engine as a
child process waiting on stdin, our server, mlx_lm.server), measure them in interleaved rounds
(``bench.interleave``), stop them, then the structured-output case (``bench.structured``, on a
server of its own), then the report.

Progress goes to stderr as each round runs; the tables go to stdout at the end (and every
round's figures to ``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import servers, structured, workload
from bench.engine import EngineFailed, EngineProcess
from bench.interleave import ENGINE, Bench
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
        description="triton-mlx against mlx_lm.server and the raw mlx-lm engine, same model, "
        "measured in interleaved rounds.")
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL,
                   help="an mlx-lm model folder (default: the demo model)")
    p.add_argument("--max-tokens", type=int, default=32,
                   help="tokens generated per request (default: 32)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16],
                   help="concurrent streams per sweep level (default: 1 4 8 16)")
    p.add_argument("--repeats", type=int, default=5,
                   help="single-stream rounds (generate_step, BatchGenerator b1, ours, "
                   "mlx_lm.server in each; default: 5)")
    p.add_argument("--sweep-repeats", type=int, default=3,
                   help="rounds per concurrency level (ours, mlx_lm.server, raw BatchGenerator "
                   "in each; default: 3)")
    p.add_argument("--only-single", action="store_true",
                   help="only the single-stream rounds (no sweep, prefix or structured case)")
    p.add_argument("--only-sweep", action="store_true",
                   help="only the sweep (no single-stream rounds, prefix or structured case)")
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
    p.add_argument("--streams-per-client", type=int, default=32,
                   help="from 64 streams, one client process per this many streams "
                   "(default: 32)")
    p.add_argument("--max-client-procs", type=int, default=max(1, (os.cpu_count() or 1) - 2),
                   help="at most this many client processes (default: the core count - 2, "
                   "at least 1; 1 sends every stream from this process)")
    p.add_argument("--json", type=Path, default=None,
                   help="also write every round's figures here, one JSON object per line")
    args = p.parse_args(argv)
    if args.max_tokens < 2 or min(args.concurrency) < 1 or args.repeats < 1:
        p.error("--max-tokens must be >= 2, --repeats and every --concurrency >= 1")
    if args.sweep_repeats < 1 or args.streams_per_client < 1 or args.max_client_procs < 1:
        p.error("--sweep-repeats, --streams-per-client and --max-client-procs must be >= 1")
    if args.skip_structured and args.only_structured:
        p.error("--skip-structured and --only-structured exclude each other")
    if sum((args.only_single, args.only_sweep, args.only_structured)) > 1:
        p.error("--only-single, --only-sweep and --only-structured exclude each other")
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


Started = tuple[EngineProcess | None, dict[str, servers.ServerSpec]]


def start(run: Run, args: argparse.Namespace, server_args: list[str], tmp: Path,
          stack: contextlib.ExitStack) -> Started:
    """Every compared system up at once: the engine child loads while the servers start."""
    engine = None
    if not args.skip_engine:
        progress(f"{ENGINE}: starting (child process)")
        engine = EngineProcess(args.model_dir, runtime_profile(server_args), args.case_timeout)
        stack.callback(engine.close)
    repository = tmp / "repository"
    repository.mkdir()
    # Specs are made just before each start, so their free ports are still free.
    makers = [lambda: servers.ours(args.model_dir, repository, args.slots, server_args)]
    if not args.skip_peer:
        makers.append(
            lambda: servers.peer(args.model_dir, args.slots, shlex.split(args.peer_args)))
    specs = {}
    for make in makers:
        spec = make()
        run.flags[spec.name] = "python " + spec.flags
        progress(f"{spec.name}: starting")
        try:
            specs[spec.name] = stack.enter_context(servers.running(spec, tmp))
        except servers.ServerFailed as exc:
            run.failures[spec.name] = str(exc)
    if OURS in specs:
        card = servers.get_json(f"{specs[OURS].base_url}/models/{specs[OURS].model}") or {}
        profile = card.get("runtime_profile")
        if profile:
            run.notes[OURS] = (f"runtime profile {profile.get('name')}: weights "
                               f"{profile.get('weights')}; BLAS {profile.get('blas')}")
    if PEER in run.flags:
        run.notes[PEER] = ("weights as stored in the folder (mlx-lm has no runtime profile); "
                           "other settings at mlx-lm's defaults")
    if engine is not None:
        try:
            run.engine_facts = engine.wait_ready()
            run.flags[ENGINE] = "python -m bench.engine (BatchGenerator, generate_step)"
        except EngineFailed as exc:
            run.failures[ENGINE] = str(exc)
            engine = None
    return engine, specs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = load_line()  # before this process adds its own
    server_args = shlex.split(args.server_args)
    args.slots = max(args.concurrency)
    tokenizer = load_tokenizer(args.model_dir)
    bias = workload.eos_ban(tokenizer)
    run = Run(args.model_dir.name, args.max_tokens, args.concurrency, bias, args.repeats,
              args.sweep_repeats, machine_lines(), [load])

    if args.only_structured:
        section = run_structured(args, server_args)
        progress("done")
        print("\n".join(["# triton-mlx bench: structured output", *run.machine, *run.load, ""]))
        print(render_structured(section), end="")
        return int(structured.failed(section))
    with tempfile.TemporaryDirectory(prefix="triton-mlx-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        stopped: dict[str, servers.ServerSpec] = {}
        stack.callback(note_exits, run, stopped)  # first in, so last out: after the stops
        engine, specs = start(run, args, server_args, Path(tmp), stack)
        stopped.update(specs)
        bench = Bench(run, args, bias, engine, specs, progress)
        stack.callback(bench.close)
        if specs or engine:
            if not args.only_sweep:
                bench.single()
            if not args.only_single:
                bench.sweep()
            if not (args.skip_prefix or args.only_single or args.only_sweep):
                bench.prefix(tokenizer)
        progress("stopping every system")
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in run.records()))
    # Printed before the structured case runs: nothing there can lose these tables.
    print(render(run), end="", flush=True)
    failed = bool(run.failures)
    if not (args.skip_structured or args.only_single or args.only_sweep):
        section = run_structured(args, server_args)
        print("\n" + render_structured(section), end="")
        failed = failed or structured.failed(section)
    progress("done")
    return int(failed)


def note_exits(run: Run, stopped: dict[str, servers.ServerSpec]) -> None:
    """How each server ended once stopped (SIGTERM): its exit code, and whether its log shows
    a C++ ``terminate`` (an abort in native teardown, which a clean exit must not have)."""
    for name, spec in stopped.items():
        if spec.exit_code is None:
            continue
        log = spec.log_tail(200)
        aborted = "terminate called" in log
        run.warnings.append(f"{name}: exit code {spec.exit_code} after SIGTERM; "
                            + ("C++ terminate in its log" if aborted
                               else "no C++ terminate in its log"))


def run_structured(args: argparse.Namespace, server_args: list[str]) -> structured.Section:
    """The structured-output case (``bench.structured``), against a server of its own."""
    progress("structured output (bench.structured)")
    return structured.run_section(
        args.model_dir, streams=args.structured_streams, repeats=args.structured_repeats,
        max_tokens=args.structured_max_tokens, timeout=args.case_timeout,
        server_args=server_args, progress=progress)
