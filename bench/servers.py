"""Starting and stopping the servers under test, on free loopback ports.

Both run as child processes of this Python with the model hub switched off
(``HF_HUB_OFFLINE=1``), their output going to a log file whose tail is shown if one fails.
``bench.run`` keeps both up at once (idle while the other is measured); ``cpu_seconds`` lets it
check that an idle one really is idle.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


UNAVAILABLE = "is unavailable: failed to load"  # our server's log line for a failed load


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message ends with its log's tail."""


@dataclass
class ServerSpec:
    """How to start one server and talk to it."""

    name: str
    argv: list[str]
    port: int
    model: str  # the ``model`` field the requests carry
    ready_path: str  # polled until it answers 200
    pid: int | None = None  # while running
    exit_code: int | None = None  # once stopped: 0 is a clean exit after SIGTERM
    process: subprocess.Popen | None = field(default=None, repr=False)  # while running
    log_path: Path | None = None
    cwd: Path = REPO_ROOT  # ``-m triton_mlx`` imports the package found here

    @property
    def alive(self) -> bool:
        """Started and not exited (a server that died mid-run fails every later request)."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines) if self.log_path and self.log_path.exists() else ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def flags(self) -> str:
        """The command line as run, for the report."""
        return " ".join(self.argv[1:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(count: int) -> int:
    """A port from which ``count`` consecutive ports were free a moment ago (the ring backend
    listens on one port per rank, counting up from ``--starting-port``)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            start = probe.getsockname()[1]
        held = [socket.socket() for _ in range(count)]
        try:
            for offset, s in enumerate(held):
                s.bind(("127.0.0.1", start + offset))
            return start
        except (OSError, OverflowError):  # taken, or past 65535
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no block of free ports found")


def rank_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the launcher's children (Linux /proc; each has MLX_RANK set)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != launcher:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in env:
            if item.startswith(b"MLX_RANK="):
                found[int(item[9:])] = int(entry.name)
    return found


def ours(model_dir: Path, repository: Path, slots: int, extra: list[str]) -> ServerSpec:
    """``python -m triton_mlx`` on ``repository``, a folder holding a link to ``model_dir``."""
    link = repository / model_dir.name
    if not link.exists():
        link.symlink_to(model_dir, target_is_directory=True)
    port = free_port()
    argv = [sys.executable, "-m", "triton_mlx", "--model-repository", str(repository),
            "--max-concurrent-requests", str(slots), "--openai-port", str(port),
            "--http-port", str(free_port()), "--metrics-port", str(free_port()),
            "--host", "127.0.0.1", "--log-level", "WARNING",
            *extra]
    return ServerSpec("triton-mlx", argv, port, model_dir.name, "/v1/health/ready")


def peer(model_dir: Path, slots: int, extra: list[str]) -> ServerSpec:
    """mlx-lm's own ``mlx_lm.server``, batching up to ``slots`` prompts and decodes at once.

    It serves the folder given by ``--model`` under the name ``default_model``; any other
    name would make it try to load that name (from the hub, which is switched off).
    """
    port = free_port()
    argv = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model_dir),
            "--host", "127.0.0.1", "--port", str(port), "--decode-concurrency", str(slots),
            "--prompt-concurrency", str(slots), "--log-level", "WARNING", *extra]
    return ServerSpec("mlx_lm.server", argv, port, "default_model", "/health")


@contextlib.contextmanager
def running(spec: ServerSpec, log_dir: Path, ready_timeout: float = 600) -> Iterator[ServerSpec]:
    """Start ``spec``, wait until it is ready, and stop it (SIGTERM, then SIGKILL) on exit."""
    log_path = log_dir / f"{spec.name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            spec.argv, stdout=log, stderr=subprocess.STDOUT, cwd=spec.cwd,
            env={**os.environ, **OFFLINE},
        )
    spec.pid = process.pid
    spec.process, spec.log_path = process, log_path
    try:
        wait_ready(spec, process, log_path, ready_timeout)
        yield spec
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        spec.exit_code = process.returncode
        spec.process = None


def get_json(url: str, timeout: float = 10) -> dict | None:
    """GET ``url`` as JSON; None on any failure (it only decorates the report)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def wait_ready(
    spec: ServerSpec, process: subprocess.Popen, log_path: Path, timeout: float
) -> None:
    url = f"http://127.0.0.1:{spec.port}{spec.ready_path}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"{spec.name} exited with {process.returncode}:\n"
                               + _tail(log_path))
        if UNAVAILABLE in log_path.read_text(errors="replace"):  # ours: it will never be ready
            raise ServerFailed(f"{spec.name} could not load the model:\n" + _tail(log_path))
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ServerFailed(f"{spec.name} was not ready within {timeout:.0f} s:\n" + _tail(log_path))


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process and its reaped children have used so far; None where
    /proc is missing (macOS) or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    return sum(int(v) for v in fields[11:15]) / _TICKS


def thread_times(pid: int) -> dict[int, tuple[float, float, int]]:
    """Per thread of ``pid``: (user seconds, system seconds, context switches, voluntary and
    not); empty where /proc is missing. The thread whose id is ``pid`` is the main thread
    (our server's event loop)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                switches = sum(int(line.split()[1]) for line in status
                               if "ctxt_switches:" in line)
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) / _TICKS, int(fields[12]) / _TICKS, switches)
    return out
