"""The command line, run as users run it: ``python -m triton_mlx``."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import TINY
from tests.waiting import wait_for

FLAGS = ["--model-repository", "--host", "--openai-port", "--http-port", "--log-level",
         "--max-memory-gb", "--default-max-tokens", "--chat-template", "--model-control-mode",
         "--repository-poll-secs", "--max-concurrent-requests", "--api-key", "--json-logs",
         "--runtime-profile", "--prefix-cache-mb", "--max-queued-requests", "--metrics-port",
         "--exit-timeout-secs", "--max-connections", "--header-timeout-secs",
         "--body-timeout-secs", "--idle-timeout-secs", "--write-timeout-secs"]


def run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "triton_mlx", *args], capture_output=True,
                          text=True, timeout=120, **kwargs)


def test_help_documents_every_flag():
    result = run("--help")
    assert result.returncode == 0
    for flag in FLAGS:
        assert flag in result.stdout, flag
    assert "TRITON_MLX_API_KEY" in result.stdout


@pytest.mark.parametrize("args, words", [
    (["--openai-port", "70000"], "TCP port"),
    (["--max-concurrent-requests", "0"], "minimum"),
    (["--model-control-mode", "sometimes"], "invalid choice"),
    (["--log-level", "LOUD"], "LOUD"),
    (["--max-memory-gb", "-1"], "positive"),
    (["--repository-poll-secs", "abc"], "not a number"),
    (["--max-connections", "0"], "minimum"),
    (["--header-timeout-secs", "0"], "positive"),
    (["--exit-timeout-secs", "-1"], ">= 0"),
    (["--api-key", ""], "empty"),
    (["--api-key", "key with spaces"], "ASCII"),
    (["--api-key", "ключ"], "ASCII"),
])
def test_nonsense_values_are_refused(tiny_repository, args, words):
    result = run("--model-repository", str(tiny_repository), *args)
    assert result.returncode == 2 and words in result.stderr


def test_an_empty_key_in_the_environment_is_refused_not_ignored(tiny_repository):
    result = run("--model-repository", str(tiny_repository),
                 env={**os.environ, "TRITON_MLX_API_KEY": ""})
    assert result.returncode == 2 and "empty" in result.stderr


def test_missing_repository_is_refused(tmp_path):
    result = run("--model-repository", str(tmp_path / "nope"))
    assert result.returncode == 2 and "not a directory" in result.stderr


def test_import_gguf_reports_a_bad_file_clearly(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"definitely not a gguf file")
    result = run("import-gguf", str(bogus), str(tmp_path / "out"))
    assert result.returncode == 2 and "import-gguf: error:" in result.stderr
    assert not (tmp_path / "out").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(port: int, process: subprocess.Popen) -> bool:
    """Whether the server answers its readiness route with 200; fails at once if it exited."""
    assert process.poll() is None, f"the server exited with status {process.returncode}"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health/ready") as answer:
            return answer.status == 200
    except OSError:  # not listening yet, or 503 (an HTTPError) while the model loads
        return False


def test_serves_with_json_logs_and_exits_cleanly_on_sigterm(tiny_repository):
    port = free_port()
    env = {**os.environ, "TRITON_MLX_API_KEY": "k3y"}
    process = subprocess.Popen(
        [sys.executable, "-m", "triton_mlx", "--model-repository", str(tiny_repository),
         "--host", "127.0.0.1", "--openai-port", str(port), "--http-port", str(free_port()),
         "--metrics-port", str(free_port()), "--json-logs"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        wait_for(lambda: ready(port, process), timeout=60, what="the server to be ready")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models",
            headers={"Authorization": "Bearer k3y", "X-Request-ID": "trace-me-42"},
        )
        with urllib.request.urlopen(request) as r:
            assert json.load(r)["data"][0]["id"] == TINY
            assert r.headers["X-Request-ID"] == "trace-me-42"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    access = [r for r in records if r["logger"] == "triton_mlx.access"]
    assert any(r.get("request_id") == "trace-me-42" and r.get("status") == 200 for r in access)
    assert all("k3y" not in json.dumps(r) for r in records)  # the key never reaches the logs
