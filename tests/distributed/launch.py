"""Running a script on several ranks with MLX's own launcher, for tests: ``mlx.launch`` with the
``ring`` backend over loopback (the only backend of MLX's Linux CPU wheel), each rank printing
JSON lines that the test reads back."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port_block(count: int) -> int:
    """A port from which ``count`` consecutive ports were free a moment ago (the ring backend
    listens on one port per rank, counting up from ``--starting-port``)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            start = probe.getsockname()[1]
        if start + count > 65535:
            continue
        try:
            held = []
            for port in range(start, start + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no block of free ports found")


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
