"""Where our server's time goes at N streams: py-spy samples every thread while cases run.

Usage: python -m bench.profile_server MODEL_DIR --streams 64 128 [--rounds 3] [--out DIR]
       [--server-args '...'] [--gil]

For each stream count it starts our server (as ``python -m bench`` does), warms it up, then
records the server process with py-spy (``--threads --idle``, 200 Hz) over ``rounds`` cases of
that many streams, and prints per thread: the share of samples busy (not waiting for work: the
selector, an idle executor, the engine's inbox) and the functions that hold the most
samples, self and inclusive.
py-spy is a test-only tool (``pip install py-spy``); it needs ptrace rights over the server.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import clients, servers, workload
from bench.run import load_tokenizer

# Frames in which a thread waits for work: the event loop's selector, an idle executor, the
# engine's inbox. (The engine thread's MLX calls count as busy: launching a step and waiting
# for it show on the same line.)
WAITING = ("select (selectors.py", "_worker (concurrent", "wait (threading.py",
           "Engine._drain_inbox")


def summarise(raw: Path, top: int = 25) -> str:
    """Per-thread busy share and hottest frames of one py-spy raw (collapsed) file."""
    threads: collections.Counter[str] = collections.Counter()
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += n
        own[thread][frames[-1]] += n
        for frame in set(frames[1:]):
            inclusive[thread][frame] += n
    lines = []
    for thread, total in threads.most_common():
        waiting = sum(n for f, n in own[thread].items() if any(w in f for w in WAITING))
        lines.append(f"== {thread}: {total} samples, busy {100 * (total - waiting) / total:.0f}%")
        lines.append("  self:")
        lines += [f"   {100 * n / total:5.1f}% {f[:140]}" for f, n in own[thread].most_common(8)]
        lines.append("  inclusive:")
        lines += [f"   {100 * n / total:5.1f}% {f[:140]}"
                  for f, n in inclusive[thread].most_common(top)]
    return "\n".join(lines)


def profile(model_dir: Path, streams: int, rounds: int, max_tokens: int, out: Path,
            server_args: list[str], gil: bool = False) -> str:
    tokenizer = load_tokenizer(model_dir)
    bias = workload.eos_ban(tokenizer)
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="triton-mlx-profile-") as tmp:
        repository = Path(tmp) / "repository"
        repository.mkdir()
        spec = servers.ours(model_dir, repository, streams, server_args)
        with servers.running(spec, Path(tmp)) as server:
            clients.run_case(server.name, server.base_url, server.model,
                             workload.warmup_messages(min(streams, 4)), 4, bias, 120)
            pid = server.pid
            raw = out / f"profile-{streams}{'-gil' if gil else ''}.raw"
            # --gil: only the thread holding the GIL is sampled, so the shares say who keeps
            # the others (the engine thread building its next step) waiting for it
            spy = subprocess.Popen([spy_bin, "record", "-p", str(pid), "-o", str(raw), "-f", "raw",
                                    "-r", "200", "--threads", "--nonblocking",
                                    *(["--gil"] if gil else ["--idle"])])
            time.sleep(1.0)  # py-spy attaches
            rates = []
            for r in range(rounds):
                case = clients.run_case(server.name, server.base_url, server.model,
                                        workload.sweep_messages(streams, r), max_tokens, bias,
                                        300)
                rates.append(f"{case.output_tps:.0f}")
            spy.send_signal(2)
            spy.wait(60)
        log = (Path(tmp) / f"{spec.name}.log").read_text(errors="replace")
    aborted = "terminate called" in log or "Abort" in log
    header = (f"# {streams} streams, {max_tokens} tokens{', GIL holders only' if gil else ''}: "
              f"output tok/s per round "
              f"{', '.join(rates)}; server exit code after SIGTERM {spec.exit_code}"
              f"{' (C++ abort in its log)' if aborted else ''}")
    return header + "\n" + summarise(raw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--streams", type=int, nargs="+", default=[64])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--server-args", default="")
    p.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for streams in args.streams:
        print(profile(args.model_dir.resolve(), streams, args.rounds, args.max_tokens, args.out,
                      shlex.split(args.server_args), args.gil), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
