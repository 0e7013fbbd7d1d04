"""A client script written from Triton's documentation runs unchanged against our server."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY

SCRIPT = Path(__file__).with_name("simple_llm_http_client.py")


def test_documented_client_example_passes(tiny_server):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "-u", f"127.0.0.1:{tiny_server.http_port}", "-m", TINY],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("PASS: infer")
