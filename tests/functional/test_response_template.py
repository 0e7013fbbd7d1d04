"""A model whose tokenizer carries a transformers response template: its replies are read with
it, in a call format none of our parsers knows (Gemma 4's ``<|tool_call>call:NAME{...}``).

The demo model is made to write such a call by vLLM's ``structured_outputs`` (a fixed choice),
so the test shows the server reading the model author's own description of its output."""

from __future__ import annotations

import json

import openai
import pytest

from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture
from tests.openai.http_client import request

CHAT_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nCall a tool as <|tool_call>call:NAME{key:<|\"|>value"
    "<|\"|>}<tool_call|>. Tools: {{ tools | tojson }}<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}")
RESPONSE_TEMPLATE = {  # Gemma 4's, as transformers' tests write it, in ChatML turns
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"<\|tool_call>call:(?P<name>\w+)",
            "close": "<tool_call|>",
            "repeats": True,
            "content": "json",
            "content_args": {"unquoted_keys": True, "string_delims": [['<|"|>', '<|"|>']]},
            "transform": {"type": "function",
                          "function": {"name": "{name}", "arguments": "{content}"}},
        },
        "content": {"close": ["<|im_end|>"], "content": "text"},
    },
}
CALL = '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>'
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}}}}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def server(smollm2_repository, tmp_path_factory):  # noqa: F811 - the fixture imported above
    from tests.conftest import RunningServer, make_config

    root = tmp_path_factory.mktemp("response-template")
    folder = root / NAME
    folder.mkdir()
    source = (smollm2_repository / NAME).resolve()
    for item in source.iterdir():
        if item.name != "tokenizer_config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((source / "tokenizer_config.json").read_text())
    config.update(chat_template=CHAT_TEMPLATE, response_template=RESPONSE_TEMPLATE)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with RunningServer(make_config(root)) as running:
        yield running


def test_a_call_in_the_models_own_format_is_read_by_its_template(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    response = client.chat.completions.create(
        model=NAME, messages=ASK, tools=TOOLS, max_tokens=60, temperature=0,
        extra_body={"structured_outputs": {"choice": [CALL]}})
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert not choice.message.content


def test_a_call_the_grammar_cannot_hold_is_refused_naming_tool_choice(server):
    status, _, body = request(server.port, "POST", "/v1/chat/completions", {
        "model": NAME, "messages": ASK, "tools": TOOLS, "tool_choice": "required",
        "max_tokens": 5})
    assert status == 400 and body["error"]["param"] == "tool_choice"
