"""Over real HTTP: a ``--chat-template`` using ``tojson`` keyword arguments serves, and a template
that fails on a request's messages is that request's 400 (naming ``messages``), not a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from transformers import AutoTokenizer

from tests.conftest import RunningServer, make_config
from tests.openai.http_client import request
from tests.tiny_model import build_tiny_model

MODEL = "plain"
# 'boom' as the first message makes the template add a number to a string: a TypeError.
TEMPLATE = """\
{%- if messages[0].content == 'boom' %}{{ messages[0].content | length + 'x' }}{% endif -%}
{%- for m in messages %}<|im_start|>{{ m.role }}
{{ m | tojson(separators=(',', ':')) }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("template-errors")
    build_tiny_model(root / "repository" / MODEL, chat_template=None)
    template = root / "template.jinja"
    template.write_text(TEMPLATE)
    with RunningServer(make_config(root / "repository", chat_template=template)) as running:
        yield running


def chat(server: RunningServer, content: str):
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    return request(server.port, "POST", "/v1/chat/completions", body)


def test_a_template_using_tojson_separators_serves(server):
    status, _, answer = chat(server, "Hello")
    assert status == 200, answer
    # The prompt is the compact JSON the template asked for, token for token.
    tokenizer = AutoTokenizer.from_pretrained(str(server.config.model_repository / MODEL))
    prompt = ('<|im_start|>user\n{"role":"user","content":"Hello"}<|im_end|>\n'
              "<|im_start|>assistant\n")
    expected = len(tokenizer.encode(prompt, add_special_tokens=False))
    assert answer["usage"]["prompt_tokens"] == expected


def test_a_template_failing_on_the_messages_is_400_and_the_server_serves_on(server):
    status, _, answer = chat(server, "boom")
    assert status == 400, answer
    error = answer["error"]
    assert error["param"] == "messages"
    assert "TypeError" in error["message"]

    status, _, answer = chat(server, "Hello again")
    assert status == 200, answer
    assert answer["choices"][0]["message"]["role"] == "assistant"
