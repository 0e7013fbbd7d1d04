"""Running a script on several ranks with MLX's own launcher, for tests: ``mlx.launch`` with the
``ring`` backend over loopback (the only backend of MLX's Linux CPU wheel), each rank printing
JSON lines that the test reads back."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from bench.servers import free_port_block, rank_pids

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "RankedServer", "free_port_block", "run_ranks"]


def run_ranks(argv: list[str], ranks: int = 2, timeout: float = 300) -> list[dict]:
    """Run ``python argv...`` on ``ranks`` ranks; the JSON lines they printed, by rank."""
    launcher = Path(sys.executable).parent / "mlx.launch"
    command = [str(launcher), "--backend", "ring", "-n", str(ranks),
               "--starting-port", str(free_port_block(ranks)), "--python", sys.executable,
               *argv]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"mlx.launch exited with {done.returncode}:\n{done.stdout}\n"
                             f"{done.stderr}")
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return sorted(records, key=lambda r: r["rank"])


class RankedServer:
    """``python -m triton_mlx`` on ``ranks`` ranks under ``mlx.launch`` (ring over loopback),
    rank 0 on ports the OS picks, read back from the log (every rank's, merged by the
    launcher). Without ``ranks`` it is one plain process, to compare with."""

    LISTENING = re.compile(r"(OpenAI API|Triton HTTP API|metrics) listening on "
                           r"http://[^:]+:(\d+)")

    def __init__(self, repository: Path, *flags: str, ranks: int = 0) -> None:
        server = ["-m", "triton_mlx", "--model-repository", str(repository), "--host",
                  "127.0.0.1", "--openai-port", "0", "--http-port", "0", "--metrics-port", "0",
                  "--model-control-mode", "none", *flags]
        if ranks:
            launcher = Path(sys.executable).parent / "mlx.launch"
            command = [str(launcher), "--backend", "ring", "-n", str(ranks), "--starting-port",
                       str(free_port_block(ranks)), "--python", sys.executable, "--", *server]
        else:
            command = [sys.executable, *server]
        # stdin a pipe left open: at end of file mlx.launch's loop spins on it (0.3-1.2 cores)
        self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._ready.wait(180) or "OpenAI API" not in self.ports:
            self.kill()
            raise AssertionError("the server did not start:\n" + self.log)

    def _read_log(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            match = self.LISTENING.search(line)
            if match:
                self.ports[match[1]] = int(match[2])
            if re.search(r"serving \d+ model\(s\)", line):
                self._ready.set()
        self._ready.set()  # exited: let the constructor report it

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['OpenAI API']}/v1"

    def rank_pids(self) -> dict[int, int]:
        """rank -> pid of the launcher's children."""
        return rank_pids(self.process.pid)

    def kill(self) -> None:
        for pid in self.rank_pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
