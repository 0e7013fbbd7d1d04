"""One model served on several ranks (``mlx.launch``, issue 15) against one process: what does
splitting it cost or bring, measured in interleaved rounds?

``python -m bench.distributed MODEL_DIR --streams 1 16 --kinds tensor pipeline --ranks 2``

Systems: ``python -m triton_mlx`` alone, and the same server under ``mlx.launch --backend ring``
on ``--ranks`` ranks per ``--parallel`` kind the model's architecture can be split as (mlx-lm's
llama has no pipeline(); qwen2 has). All are up at once; each round sends N concurrent streaming
chats to each in turn, the order alternating, with ``bench.ab_versions``'s clients. Per level:
each system's output and summed decode tok/s and TTFT p50 as median (min-max), the per-round
ratio to one process, and for ranked ones rank 0's metrics: the model's own collectives per
sampled step (``triton_mlx_rank_collective_seconds``: one step in 64 is timed) and their share
of that step, ms per command exchange and exchanges per generated token (one per engine-loop
turn).

Idle ranks are not idle: MLX's ring backend polls while a rank waits in a collective (the other
ranks wait in one for rank 0's next command) and ``mlx.launch`` polls its pipes. So the bench
prints each system's idle CPU, then stops (SIGSTOP) every system but the one measured
(``--no-pause``: keep them running); ``--freeze-launcher`` also stops the measured one's
launcher, to see what its polling costs. Each system is its own process group, so Ctrl-C reaches
only the bench; on the way out it resumes each, sends SIGTERM to rank 0 (which drains, then
tells the other ranks to exit) and waits for the launcher, killing what is left after a while.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
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
from bench.machine import load_line, machine_lines
from bench.stats import ratio_summary, show, show_ms, show_ratio, spread

STOP_TIMEOUT = 120.0  # rank 0 drains, then the others exit
COUNTERS = {  # metric family -> key (rank 0's, summed over the model's labels)
    "triton_mlx_rank_exchange_seconds": "exchange_s",
    "triton_mlx_rank_exchanges": "exchanges",
    "triton_mlx_rank_collective_seconds": "collective_s",
    "triton_mlx_rank_collective_steps": "collective_steps",
    "triton_mlx_rank_sampled_step_seconds": "sampled_step_s",
    "triton_mlx_generation_tokens_total": "generated",
}
BASE = "one process"


@dataclass
class System:
    """One server under test: its spec, where its metrics are, and its figures by level."""

    label: str
    spec: servers.ServerSpec
    metrics_port: int
    ranks: int = 1
    rows: dict[int, list[dict[str, float | None]]] = field(default_factory=dict)

    def pause(self, stopped: bool, launcher_only: bool = False) -> None:
        """SIGSTOP (or SIGCONT) the system's process group, or only its launcher."""
        sig = signal.SIGSTOP if stopped else signal.SIGCONT
        with contextlib.suppress(ProcessLookupError):
            if launcher_only:
                os.kill(self.spec.pid, sig)
            else:
                os.killpg(self.spec.pid, sig)  # start_new_session: its group is its pid


def unsupported(model_dir: Path, kind: str) -> str | None:
    """Why the server cannot split this model as ``kind`` (its own check), or None."""
    from mlx_lm.utils import _get_classes, load_config

    from triton_mlx.distributed.world import ShardingError, check_shardable

    config = load_config(model_dir)
    model_class, args_class = _get_classes(config)
    try:  # the parameters stay unevaluated: building the model allocates nothing
        check_shardable(model_class(args_class.from_dict(config)), kind)
    except ShardingError as exc:
        return str(exc)
    return None


def launched(spec: servers.ServerSpec, ranks: int, flags: list[str], backend: str = "ring",
             label: str | None = None) -> servers.ServerSpec:
    """``spec`` run on ``ranks`` ranks by ``mlx.launch`` on this machine, with ``flags`` added
    to its command line: ring over loopback, or nccl with one GPU per rank (the launcher sets
    each rank's ``CUDA_VISIBLE_DEVICES``; NVLink multicast stays off)."""
    # mlx.launch's own entry point, run by this Python (its script may not be on PATH, e.g.
    # where MLX was installed with pip --target)
    launcher = [sys.executable, "-c", "import sys; from mlx._distributed_utils.launch import "
                "main; sys.exit(main())"]
    if backend == "nccl":
        transport = ["--nccl-port", str(servers.free_port()), "--env", "NCCL_NVLS_ENABLE=0"]
    else:
        transport = ["--starting-port", str(servers.free_port_block(ranks))]
    argv = [*launcher, "--backend", backend, "-n", str(ranks), *transport,
            "--python", sys.executable, "--", *spec.argv[1:], *flags]
    return servers.ServerSpec(label or spec.name, argv, spec.port, spec.model, spec.ready_path)


@contextlib.contextmanager
def serving(spec: servers.ServerSpec, log_dir: Path,
            stop_timeout: float = STOP_TIMEOUT) -> Iterator[servers.ServerSpec]:
    """Like ``servers.running``, for a launcher too: stdin is a pipe left open (the launcher
    spins on a stdin at EOF), and stopping goes through rank 0 so every rank exits cleanly
    (within ``stop_timeout``, else every rank is killed)."""
    log_path = log_dir / f"{spec.name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(spec.argv, stdin=subprocess.PIPE, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=spec.cwd,
                                   env={**os.environ, **servers.OFFLINE},
                                   start_new_session=True)
    spec.pid, spec.process, spec.log_path = process.pid, process, log_path
    try:
        servers.wait_ready(spec, process, log_path, 600)
        yield spec
    finally:
        _stop(process, stop_timeout)
        spec.exit_code, spec.process = process.returncode, None


def _stop(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM to rank 0 (or to the lone server), wait; kill every rank left after that."""
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)  # it may be paused
        target = servers.rank_pids(process.pid).get(0, process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            for pid in servers.rank_pids(process.pid).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait()
        if process.stdin:
            process.stdin.close()


def metrics(port: int, model: str) -> dict[str, float]:
    """Rank 0's split and token counters of ``model`` on a metrics port, keyed as ``COUNTERS``
    names them (0 where absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = dict.fromkeys(COUNTERS.values(), 0.0)
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in COUNTERS and f'model="{model}"' in rest:
            found[COUNTERS[name]] += float(line.rsplit(" ", 1)[1])
    return found


def split_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Between two ``metrics`` readings: ms of the model's collectives per sampled step and
    their share of it, exchange per step, exchanges per generated token."""
    delta = {key: after[key] - before[key] for key in after}
    row: dict[str, float | None] = {}
    if delta["collective_steps"]:
        row["collective"] = delta["collective_s"] / delta["collective_steps"]
        row["collective_share"] = (delta["collective_s"] / delta["sampled_step_s"]
                                   if delta["sampled_step_s"] else None)
    if delta["exchanges"]:
        row["exchange"] = delta["exchange_s"] / delta["exchanges"]
        row["per_token"] = (delta["exchanges"] / delta["generated"]
                            if delta["generated"] else None)
    return row


def idle_line(systems: list[System], seconds: float = 3.0) -> str:
    """The CPU each system's processes use while all are idle, in cores."""
    pids = {}
    for s in systems:
        ranks = servers.rank_pids(s.spec.pid)
        named = {f"rank {r}": p for r, p in sorted(ranks.items())}
        pids[s.label] = {"launcher": s.spec.pid, **named} if ranks else {"": s.spec.pid}
    before = {(k, n): servers.cpu_seconds(p) or 0.0 for k, d in pids.items() for n, p in d.items()}
    time.sleep(seconds)
    parts = []
    for label, named in pids.items():
        used = [((servers.cpu_seconds(p) or 0.0) - before[label, n]) / seconds
                for n, p in named.items()]
        detail = ", ".join(f"{n} {u:.2f}" for n, u in zip(named, used, strict=True))
        parts.append(f"{label} {sum(used):.2f}" + (f" ({detail})" if len(named) > 1 else ""))
    return f"idle CPU over {seconds:.0f} s, in cores: " + "; ".join(parts)


def measure(system: System, streams: int, max_tokens: int, ban: dict[str, int]) -> None:
    """One round on one system; for ranked ones, the exchange figures of that round."""
    spec = system.spec
    before = metrics(system.metrics_port, spec.model) if system.ranks > 1 else {}
    row: dict[str, float | None] = dict(one_round(spec.port, spec.model, streams, max_tokens,
                                                  ban))
    if system.ranks > 1:
        row.update(split_figures(before, metrics(system.metrics_port, spec.model)))
    decode = row.get("decode")
    # one token per stream per step: the step's time, whose growth over one process's is the
    # split's cost (the model's own collectives and rank 0's exchange)
    row["step"] = streams / decode if decode else None
    system.rows.setdefault(streams, []).append(row)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--kinds", nargs="+", choices=("tensor", "pipeline"),
                        default=["tensor", "pipeline"])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--server-args", default="", help="for every server")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here")
    parser.add_argument("--no-pause", action="store_true",
                        help="keep the systems not measured running (they poll)")
    parser.add_argument("--freeze-launcher", action="store_true",
                        help="stop mlx.launch itself while its ranks are measured")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    model_dir = args.model_dir.resolve()
    print("\n".join([*machine_lines(), load_line()]), flush=True)
    kinds = []
    for kind in args.kinds:
        reason = unsupported(model_dir, kind)
        if reason:
            print(f"note: {kind} x{args.ranks} skipped: {reason}")
        else:
            kinds.append(kind)
    ban = eos_bias(model_dir)
    slots = max(args.streams)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        log_dir = args.log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        repository = Path(tmp) / "repository"
        repository.mkdir()
        systems = []
        for kind in [None, *kinds]:
            spec = servers.ours(model_dir, repository, slots, args.server_args.split())
            port = int(spec.argv[spec.argv.index("--metrics-port") + 1])
            if kind is None:
                system = System(BASE, spec, port)
            else:
                if not args.no_pause:  # paused longer than it, a rank would give up
                    spec.argv += ["--rank-timeout-secs", "86400"]
                spec = launched(spec, args.ranks, ["--parallel", kind],
                                label=f"triton-mlx-{kind}")
                system = System(f"{kind} x{args.ranks}", spec, port, args.ranks)
            _progress(f"starting {system.label}: {system.spec.flags}")
            stack.enter_context(serving(system.spec, log_dir))
            systems.append(system)
        for system in systems:  # warm: first requests compile kernels
            one_round(system.spec.port, system.spec.model, min(8, slots), 8, ban)
        print(idle_line(systems), flush=True)
        for system in systems:
            _turn(system, args, measured=False)
        for streams in args.streams:
            for r in range(args.rounds):
                _progress(f"{streams} streams, round {r + 1}")
                for system in (systems if r % 2 == 0 else systems[::-1]):
                    _turn(system, args, measured=True)
                    measure(system, streams, args.max_tokens, ban)
                    _turn(system, args, measured=False)
            _report(streams, systems)


def _turn(system: System, args: argparse.Namespace, measured: bool) -> None:
    """Before a system's round, resume it; after, pause it again (as the flags say)."""
    if not args.no_pause:
        system.pause(not measured)
    if args.freeze_launcher and system.ranks > 1:
        system.pause(True, launcher_only=True)


def _progress(message: str) -> None:
    print(f"[distributed {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _report(streams: int, systems: list[System]) -> None:
    base = systems[0].rows[streams]
    print(f"\n{streams} streams, {len(base)} rounds")
    for system in systems:
        rows = system.rows[streams]

        def column(key: str, rows: list[dict[str, float | None]] = rows) -> list[float | None]:
            return [row.get(key) for row in rows]

        line = level_figures(f"  {system.label:>12}:", rows)
        if system.ranks > 1:
            ratio = ratio_summary(column("output"), [row["output"] for row in base])
            per_token = spread(column("per_token"))
            step, base_step = spread(column("step")), spread([row.get("step") for row in base])
            if step and base_step:
                line.append(f"(+{(step.median - base_step.median) * 1000:.2f} ms per step over "
                            f"{BASE}: collectives and exchange)")
            line += [f"output/{BASE} per round {show_ratio(ratio)}",
                     collectives_text(column("collective"), column("collective_share")),
                     f"exchange {show_ms(spread(column('exchange')), 2)} per step",
                     f"{show(per_token, lambda v: f'{v:.3f}')} exchanges per token"]
        print("  ".join(line))
    sys.stdout.flush()


def level_figures(label: str, rows: list[dict[str, float | None]]) -> list[str]:
    """A system's figures at one level over its rounds: output, decode, TTFT, step, failed."""

    def column(key: str) -> list[float | None]:
        return [row.get(key) for row in rows]

    return [label, f"output {show(spread(column('output')))} tok/s",
            f"decode {show(spread(column('decode')))} tok/s",
            f"TTFT p50 {show_ms(spread(column('ttft')))}",
            f"step {show_ms(spread(column('step')), 2)}",
            f"failed {sum(row['failed'] or 0 for row in rows):.0f}"]


def collectives_text(seconds: list[float | None], shares: list[float | None]) -> str:
    """The model's own collectives per sampled step, and their share of that step."""
    share = spread(shares)
    return (f"collectives {show_ms(spread(seconds), 2)} per sampled step"
            + (f" ({share.median:.0%} of it)" if share else ""))


if __name__ == "__main__":
    main()
