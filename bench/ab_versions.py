"""Two checkouts of our server side by side: is a change faster, measured in interleaved rounds?

``python -m bench.ab_versions MODEL --code before=/path/to/old --code after=. --streams 64 128``

Each ``--code`` folder holds a ``triton_mlx`` package; every server runs from its folder (so
``-m triton_mlx`` imports that copy) on the same model, all up at once. Each round sends N
concurrent streaming chat requests (each with a prompt of its own, every special token banned
so each runs to ``--max-tokens``) to each server in turn, alternating the order, from client
processes of 64 streams each (plain sockets, so the client costs little beside the server);
greedy, or as ``--sampling`` says. It prints, per level, each version's output tok/s
(completion tokens over the round's wall time, prefill included; tokens counted from the
``usage`` chunk, since a stream may carry several tokens in one event), summed decode tok/s
and TTFT p50, as median (min-max), and the per-round ratio of each version to the first.
``--thread-cpu`` adds, per version, what its threads spent per completion token over the
rounds: the event loop (main thread) and the two busiest others (engine thread, MLX workers),
user and system microseconds and context switches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import servers
from bench.aiperf_run import eos_bias
from bench.stats import times

STREAMS_PER_PROCESS = 64


def _request(model: str, index: int, max_tokens: int, ban: dict[str, int],
             sampling: dict[str, Any] | None = None) -> bytes:
    body = json.dumps({
        "model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}, "logit_bias": ban,
        "messages": [{"role": "user", "content":
                      f"Request {index}: write story number {index * 7919} about topic {index}."}],
        **(sampling or {}),
    }).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    return head + body


async def _stream(port: int, payload: bytes) -> tuple[float | None, float | None, int]:
    """(first content time, last content time, completion tokens) of one request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    first = last = None
    tokens = 0
    while line := await reader.readline():
        if not line.startswith(b"data: {"):
            continue
        # our server writes compact JSON, mlx_lm.server json.dumps' default spacing
        if b'"content":"' in line or b'"content": "' in line:
            last = time.perf_counter()
            first = first or last
        if b'"usage":{' in line or b'"usage": {' in line:
            tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    writer.close()
    return first, last, tokens


def _client(port: int, payloads: list[bytes], barrier: Any, out: Any) -> None:
    async def run() -> list[tuple[float | None, float | None, int]]:
        return await asyncio.gather(*(_stream(port, p) for p in payloads))
    barrier.wait()
    out.put(asyncio.run(run()))


def one_round(port: int, model: str, streams: int, max_tokens: int,
              ban: dict[str, int], sampling: dict[str, Any] | None = None) -> dict[str, float]:
    payloads = [_request(model, i, max_tokens, ban, sampling) for i in range(streams)]
    parts = [payloads[i : i + STREAMS_PER_PROCESS]
             for i in range(0, streams, STREAMS_PER_PROCESS)]
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(len(parts) + 1), ctx.Queue()
    procs = [ctx.Process(target=_client, args=(port, part, barrier, out)) for part in parts]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    results = [r for _ in procs for r in out.get()]
    for proc in procs:
        proc.join()
    done = [(f, la, n) for f, la, n in results if f is not None and n > 0]
    if not done:  # every stream failed
        return {"output": 0.0, "decode": 0.0, "ttft": None, "failed": streams}
    wall = max(la for _, la, _ in done) - start
    decode = sum((n - 1) / (la - f) for f, la, n in done if n > 1 and la - f > 1e-3)
    return {"output": sum(n for _, _, n in done) / wall, "decode": decode,
            "ttft": statistics.median(f - start for f, _, _ in done),
            "failed": streams - len(done)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--code", action="append", required=True, metavar="LABEL=DIR")
    parser.add_argument("--streams", type=int, nargs="+", default=[64])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server-args", default="", help="for every version's server")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here")
    parser.add_argument("--sampling", type=json.loads, default={},
                        help="sampling fields for every request, a JSON object, e.g. "
                             "'{\"temperature\": 1}' (default: greedy)")
    parser.add_argument("--thread-cpu", action="store_true",
                        help="report each version's CPU time per token by thread")
    parser.add_argument("--version-args", action="append", default=[], metavar="LABEL=ARGS",
                        help="more arguments for one version's server, e.g. "
                             "'nocache=--prefix-cache-mb 0' (the same code may run twice)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    ban = eos_bias(args.model_dir)
    model_dir = args.model_dir.resolve()
    versions = [tuple(c.split("=", 1)) for c in args.code]
    slots = max(args.streams)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        log_dir = args.log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        specs = {}
        own = dict(v.split("=", 1) for v in args.version_args)
        for label, code in versions:
            repository = Path(tmp) / f"repo-{label}"
            repository.mkdir()
            spec = servers.ours(model_dir, repository, slots,
                                [*args.server_args.split(), *own.get(label, "").split()])
            spec.cwd, spec.name = Path(code).resolve(), f"triton-mlx-{label}"
            _progress(f"starting {label} from {spec.cwd}")
            specs[label] = stack.enter_context(servers.running(spec, log_dir))
        for spec in specs.values():  # warm: first requests compile kernels, sampling's too
            one_round(spec.port, spec.model, min(8, slots), 8, ban, args.sampling)
        for streams in args.streams:
            figures: dict[str, list[dict[str, float]]] = {label: [] for label, _ in versions}
            spent: dict[str, dict[int, list[float]]] = {label: {} for label, _ in versions}
            for r in range(args.rounds):
                _progress(f"{streams} streams, round {r + 1}")
                for label, _ in (versions if r % 2 == 0 else versions[::-1]):
                    spec = specs[label]
                    before = servers.thread_times(spec.pid) if args.thread_cpu else {}
                    figures[label].append(one_round(spec.port, spec.model, streams,
                                                    args.max_tokens, ban, args.sampling))
                    if args.thread_cpu:
                        _add_thread_times(spent[label], before, servers.thread_times(spec.pid))
            _report(streams, versions, figures)
            if args.thread_cpu:
                tokens = args.rounds * streams * args.max_tokens
                for label, _ in versions:
                    _report_threads(label, specs[label].pid, spent[label], tokens)


def _progress(message: str) -> None:
    print(f"[ab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _report(streams: int, versions: list[tuple[str, str]],
            figures: dict[str, list[dict[str, float]]]) -> None:
    base = versions[0][0]
    print(f"\n{streams} streams, {len(figures[base])} rounds")
    for label, _ in versions:
        rows = figures[label]
        line = [f"  {label:>10}:"]
        for key, unit in (("output", "tok/s"), ("decode", "tok/s"), ("ttft", "s")):
            values = [row[key] for row in rows]
            line.append(f"{key} {statistics.median(values):.1f} "
                        f"({min(values):.1f}-{max(values):.1f}) {unit}"
                        if unit == "tok/s" else
                        f"{key} p50 {statistics.median(values) * 1000:.0f} ms")
        line.append(f"failed {sum(row['failed'] for row in rows):.0f}")
        if label != base:
            ratios = [a["output"] / b["output"] for a, b in zip(rows, figures[base], strict=True)]
            line.append(f"output/{base} per round {times(statistics.median(ratios))} "
                        f"({times(min(ratios))}-{times(max(ratios))})")
        print("  ".join(line))
    sys.stdout.flush()


def _add_thread_times(spent: dict[int, list[float]], before: dict[int, tuple],
                      after: dict[int, tuple]) -> None:
    """Add each thread's (user, system, switches) between two ``servers.thread_times``."""
    for tid, now in after.items():
        was = before.get(tid, (0.0, 0.0, 0))
        total = spent.setdefault(tid, [0.0, 0.0, 0.0])
        for i in range(3):
            total[i] += now[i] - was[i]


def _report_threads(label: str, pid: int, spent: dict[int, list[float]], tokens: int) -> None:
    """Per completion token: the main thread's (event loop) and the two busiest others'."""
    others = sorted((t for t in spent if t != pid), key=lambda t: -sum(spent[t][:2]))[:2]
    parts = []
    for name, tid in [("loop", pid), *((f"thread {i + 1}", t) for i, t in enumerate(others))]:
        user, system, switches = spent.get(tid, [0.0, 0.0, 0.0])
        parts.append(f"{name} user {user / tokens * 1e6:.0f} us, sys {system / tokens * 1e6:.0f}"
                     f" us, {switches / tokens:.2f} switches")
    print(f"  {label:>10} per token: " + "; ".join(parts))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
