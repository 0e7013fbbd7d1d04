"""One model on one GPU against two GPUs (issue 16): our server split tensor-parallel and as a
pipeline, next to ``mlx_lm.server`` launched the same way, in interleaved rounds.

``python -m bench.two_gpus MODEL_DIR --streams 1 16 64 --rounds 5``

Systems: ``python -m triton_mlx`` on GPU 0; the same under ``mlx.launch --backend nccl -n 2``
(one GPU per rank) with ``--parallel tensor`` and ``--parallel pipeline``; ``mlx_lm.server``
under the same launcher, tensor-parallel (its default) and ``--pipeline``; ``--peer-single``
adds ``mlx_lm.server`` on GPU 0. ``--backend ring --ranks 2`` tries it all on a CPU.

Why a fresh server every turn: a ranked server at rest still holds a collective open (its
other ranks wait in an all-sum for rank 0's next word; ``mlx_lm.server``'s do the same), and
under NCCL that is a kernel spinning on the other GPU, which would share that GPU with whatever
is measured. So each round starts each system in turn (the order alternating), warms it,
measures every level, and stops it (SIGTERM to rank 0). ``--keep-up`` starts each once and keeps
all up instead: sound only where no idle system holds a GPU another one is measured on (one
ranked system beside one-GPU ones on GPU 0: an idle one-GPU server runs no kernel), and much
faster with a large model (a fresh start took ~30 s for an 8B model on the H200; on a fresh
machine the first took ~4 minutes, building CUDA kernels). They start one after the other: two of
our servers loading an 8B 4-bit model at once on GPU 0 beside ``mlx_lm.server`` both failed with
``cudaMallocAsync ... out of memory`` (H200, 2026-11-29), while one after the other they ran.

Per level and system: output and summed decode tok/s and TTFT p50 as median (min-max) over
rounds, the per-round ratio to our one-GPU server, the step time (streams / decode tok/s) and,
for our ranked servers, rank 0's metrics: the model's own collectives per sampled step and the
command exchange per step.

Greedy check (first round): each system answers ``PROMPTS`` one at a time (temperature 0,
``--check-tokens`` tokens) and the report says how many match our one-GPU server's text, ends
stripped (ours strips a reply's ends where the tokenizer's response template says to;
``mlx_lm.server`` keeps the first token's space).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import servers
from bench.ab_versions import one_round
from bench.aiperf_run import eos_bias
from bench.distributed import (
    collectives_text,
    launched,
    level_figures,
    metrics,
    serving,
    split_figures,
    unsupported,
)
from bench.machine import load_line, machine_lines
from bench.stats import ratio_summary, show, show_ms, show_ratio, spread

BASE = "ours, 1 GPU"
PROMPTS = ["Write a haiku about the sea.", "List three prime numbers.",
           "Explain what a compiler does.", "Say hello in French and in German."]


@dataclass
class System:
    """One server under test: how to build its spec (fresh ports each turn) and its figures."""

    label: str
    ours: bool
    ranks: int
    flags: list[str]
    rows: dict[int, list[dict[str, float | None]]] = field(default_factory=dict)
    texts: list[str] | None = None
    ready_seconds: list[float] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    aborts: int = 0  # "terminate called" in its logs: a C++ abort on the way out


def _systems(args: argparse.Namespace, model_dir: Path) -> list[System]:
    systems = [System(BASE, True, 1, [])]
    if args.peer_single:
        systems.append(System("mlx_lm.server, 1 GPU", False, 1, []))
    for kind in args.kinds:
        reason = unsupported(model_dir, kind)
        if reason:
            print(f"note: {kind} x{args.ranks} skipped: {reason}")
            continue
        systems.append(System(f"ours, {kind} x{args.ranks}", True, args.ranks,
                              ["--parallel", kind]))
        if not args.skip_peer:
            systems.append(System(f"mlx_lm.server, {kind} x{args.ranks}", False, args.ranks,
                                  ["--pipeline"] if kind == "pipeline" else []))
    return systems


def _spec(system: System, args: argparse.Namespace, model_dir: Path, repository: Path,
          round_: int) -> tuple[servers.ServerSpec, int | None]:
    """A fresh spec for one turn, and our metrics port (None for mlx_lm.server)."""
    slots = max(args.streams)
    extra = args.server_args.split()
    if system.ours:
        spec = servers.ours(model_dir, repository, slots, extra)
        metrics_port = int(spec.argv[spec.argv.index("--metrics-port") + 1])
    else:
        spec, metrics_port = servers.peer(model_dir, slots, []), None
    name = system.label.replace(", ", "-").replace(" ", "") + f"-r{round_ + 1}"
    if system.ranks > 1:
        spec = launched(spec, system.ranks, system.flags, args.backend, label=name)
    else:
        spec.name = name
    return spec, metrics_port


def greedy_texts(spec: servers.ServerSpec, max_tokens: int, ban: dict[str, int]) -> list[str]:
    """Each prompt alone, greedy, special tokens banned: the texts to compare across systems."""
    texts = []
    for prompt in PROMPTS:
        body = json.dumps({"model": spec.model, "max_tokens": max_tokens, "temperature": 0,
                           "logit_bias": ban,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        request = urllib.request.Request(f"{spec.base_url}/chat/completions", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            texts.append(json.load(response)["choices"][0]["message"]["content"] or "")
    return texts


@contextlib.contextmanager
def started(system: System, args: argparse.Namespace, model_dir: Path, repository: Path,
            log_dir: Path, ban: dict[str, int],
            round_: int) -> Iterator[tuple[servers.ServerSpec, int | None]]:
    """Start the system, warm it, check its greedy texts once; stop it on the way out."""
    spec, metrics_port = _spec(system, args, model_dir, repository, round_)
    clock = time.perf_counter()
    # mlx_lm.server's other ranks never hear of rank 0's SIGTERM: they are killed after a while
    with serving(spec, log_dir, stop_timeout=120 if system.ours else 15):
        system.ready_seconds.append(time.perf_counter() - clock)
        for streams in args.streams:  # a batch size's first steps can compile kernels: on the
            one_round(spec.port, spec.model, streams, 4, ban)  # H200, 4-bit ones took seconds
        if system.texts is None:
            try:
                system.texts = greedy_texts(spec, args.check_tokens, ban)
            except OSError as exc:  # HTTP errors too: the server is broken, the rounds say how
                print(f"{system.label}: greedy check failed: {exc}", flush=True)
                system.texts = []
        yield spec, metrics_port
    system.exit_codes.append(spec.exit_code)
    log = spec.log_path.read_text(errors="replace") if spec.log_path else ""
    system.aborts += log.count("terminate called")


def measure(system: System, spec: servers.ServerSpec, metrics_port: int | None,
            args: argparse.Namespace, ban: dict[str, int]) -> None:
    """One round of every level on a running system."""
    for streams in args.streams:
        before = metrics(metrics_port, spec.model) if metrics_port else {}
        repeats = args.single_repeats if streams == 1 else 1
        runs = [one_round(spec.port, spec.model, streams, args.max_tokens, ban)
                for _ in range(repeats)]
        row: dict[str, float | None] = {key: _median([r[key] for r in runs]) for key in runs[0]}
        row["failed"] = sum(r["failed"] for r in runs)
        if metrics_port and system.ranks > 1:
            row.update(split_figures(before, metrics(metrics_port, spec.model)))
        row["step"] = streams / row["decode"] if row.get("decode") else None
        system.rows.setdefault(streams, []).append(row)


def _rounds(systems: list[System], args: argparse.Namespace, model_dir: Path,
            repository: Path, log_dir: Path, ban: dict[str, int]) -> None:
    live: dict[str, tuple[servers.ServerSpec, int | None]] = {}
    with contextlib.ExitStack() as stack:
        if args.keep_up:  # every system started once, up through all rounds
            starts = [(system, started(system, args, model_dir, repository, log_dir, ban, 0))
                      for system in systems]
            for system, context in starts:
                _progress(f"starting {system.label}")
                try:
                    live[system.label] = stack.enter_context(context)
                except servers.ServerFailed as exc:
                    print(f"{system.label} failed to start: {exc}", flush=True)
            _report_greedy(systems)
        first = args.first_round - 1
        for r in range(first, first + args.rounds):
            for system in (systems if r % 2 == 0 else systems[::-1]):
                _progress(f"round {r + 1}: {system.label}")
                try:
                    if args.keep_up:
                        if system.label in live:
                            measure(system, *live[system.label], args, ban)
                        continue
                    with started(system, args, model_dir, repository, log_dir, ban,
                                 r) as running:
                        measure(system, *running, args, ban)
                except servers.ServerFailed as exc:
                    print(f"{system.label} failed in round {r + 1}: {exc}", flush=True)
            if r == first and not args.keep_up:
                _report_greedy(systems)
            if args.json:
                args.json.write_text(json.dumps([dataclasses.asdict(s) for s in systems]))
    if args.json:  # again once every server has stopped: their exit codes and aborts
        args.json.write_text(json.dumps([dataclasses.asdict(s) for s in systems]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, nargs="?")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--first-round", type=int, default=1,
                        help="number the rounds from here (a run continued in another call)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--single-repeats", type=int, default=3,
                        help="one-stream requests per turn (their median is the turn's figure)")
    parser.add_argument("--check-tokens", type=int, default=32)
    parser.add_argument("--kinds", nargs="+", choices=("tensor", "pipeline"),
                        default=["tensor", "pipeline"])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--backend", default="nccl", choices=("nccl", "ring"))
    parser.add_argument("--server-args", default="", help="for every one of our servers")
    parser.add_argument("--skip-peer", action="store_true", help="leave mlx_lm.server out")
    parser.add_argument("--peer-single", action="store_true",
                        help="also mlx_lm.server on one GPU")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here")
    parser.add_argument("--keep-up", action="store_true",
                        help="start each system once and keep all up (only where no idle "
                             "system holds a GPU the others use: see the module's docstring)")
    parser.add_argument("--json", type=Path, help="write every row here, after each round")
    parser.add_argument("--report", type=Path, nargs="+",
                        help="print the report of these --json files, their rounds together")
    args = parser.parse_args(argv)
    if args.report:
        systems = _merged(args.report)
        _report_greedy(systems)
        for streams in args.streams:
            _report(streams, systems)
        _report_starts(systems)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    os.environ["NCCL_NVLS_ENABLE"] = "0"  # never NVLink multicast, in any child either
    if args.backend == "nccl":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one-GPU systems; ranks get theirs
    model_dir = args.model_dir.resolve()
    print("\n".join([*machine_lines(), load_line()]), flush=True)
    systems = _systems(args, model_dir)
    ban = eos_bias(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = args.log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        repository = Path(tmp) / "repository"
        repository.mkdir()
        _rounds(systems, args, model_dir, repository, log_dir, ban)
        for streams in args.streams:
            _report(streams, systems)
        _report_starts(systems)


def _merged(paths: list[Path]) -> list[System]:
    """The systems of several --json files, each one's rounds after the previous file's."""
    systems: dict[str, System] = {}
    for path in paths:
        for saved in json.loads(path.read_text()):
            saved["rows"] = {int(k): v for k, v in saved["rows"].items()}
            system = systems.get(saved["label"])
            if system is None:
                systems[saved["label"]] = System(**saved)
                continue
            for streams, level in saved["rows"].items():
                system.rows.setdefault(streams, []).extend(level)
            system.texts = system.texts or saved["texts"]
            system.ready_seconds += saved["ready_seconds"]
            system.exit_codes += saved["exit_codes"]
            system.aborts += saved["aborts"]
    return list(systems.values())


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _progress(message: str) -> None:
    print(f"[two_gpus {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _report_greedy(systems: list[System]) -> None:
    base = systems[0].texts
    print(f"\ngreedy, {len(PROMPTS)} prompts alone, texts equal to {BASE}'s:")
    for system in systems[1:]:
        if not base or not system.texts:
            print(f"  {system.label:>28}: not run")
            continue
        pairs = [(a.strip(), b.strip()) for a, b in zip(system.texts, base, strict=True)]
        same = sum(a == b for a, b in pairs)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        where = ""
        if first is not None:
            a, b = pairs[first]
            at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                      min(len(a), len(b)))
            where = (f" (prompt {first}, from character {at}: {b[max(0, at - 10):at + 30]!r} "
                     f"vs {a[max(0, at - 10):at + 30]!r})")
        print(f"  {system.label:>28}: {same}/{len(PROMPTS)}{where}")
    sys.stdout.flush()


def _report(streams: int, systems: list[System]) -> None:
    base = systems[0].rows.get(streams, [])
    print(f"\n{streams} streams, {len(base)} rounds")
    for system in systems:
        rows = system.rows.get(streams, [])

        def column(key: str, rows: list[dict[str, float | None]] = rows) -> list[float | None]:
            return [row.get(key) for row in rows]

        line = level_figures(f"  {system.label:>28}:", rows)
        if system is not systems[0] and rows and base:
            ratio = ratio_summary(column("output"), [row["output"] for row in base])
            line.append(f"output/{BASE} per round {show_ratio(ratio)}")
        if any(column("collective")):
            line += [collectives_text(column("collective"), column("collective_share")),
                     f"exchange {show_ms(spread(column('exchange')), 2)} per step"]
        print("  ".join(line))
    sys.stdout.flush()


def _report_starts(systems: list[System]) -> None:
    print("\nseconds to ready; exit codes after SIGTERM (the launcher's, for ranks); C++ "
          "aborts in the logs:")
    for system in systems:
        print(f"  {system.label:>28}: ready {show(spread(system.ready_seconds), _seconds)}; "
              f"exit {system.exit_codes}; aborts {system.aborts}")


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"


if __name__ == "__main__":
    main()
