"""Tools in the prompt: a template with tool support gets them as they are (arguments as
objects); any other template gets the default tool format, rendered by the real template."""

from __future__ import annotations

import json
from pathlib import Path

from triton_mlx.serving.prompts import PromptBuilder
from triton_mlx.serving.tools import (
    Tool,
    ToolRequest,
    chat_for_template,
    format_default_call,
    template_reads_tools,
)

TEMPLATES = Path(__file__).parent / "templates"
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

WEATHER = Tool("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}},
               "Get the weather.")
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "21 C"},
]


class _Tokenizer:
    special_tokens_map: dict = {}

    def encode(self, text, add_special_tokens=False):
        return list(text.encode())


def test_a_template_without_tools_gets_the_default_format():
    assert not template_reads_tools(CHATML)
    chat = chat_for_template(HISTORY, ToolRequest((WEATHER,)), native=False)
    assert chat.tools is None
    rendered = PromptBuilder(_Tokenizer(), CHATML).render_chat(chat.messages)
    system, user, assistant, results = rendered.split("<|im_end|>\n")[:4]
    assert system.startswith("<|im_start|>system\n") and "<tools>" in system
    assert json.dumps(WEATHER.definition()) in system
    assert user == "<|im_start|>user\nWeather in Paris?"
    assert assistant == "<|im_start|>assistant\n" + format_default_call(
        "get_weather", {"city": "Paris"})
    # both results in one user turn, each wrapped
    assert results == ("<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n"
                       "<tool_response>\n21 C\n</tool_response>")


def test_an_existing_system_turn_keeps_its_text_first():
    messages = [{"role": "system", "content": "Be brief."}, *HISTORY[:1]]
    chat = chat_for_template(messages, ToolRequest((WEATHER,)), native=False)
    assert chat.messages[0]["content"].startswith("Be brief.\n\nYou may call")
    assert len(chat.messages) == 2


def test_tool_choice_none_leaves_the_tools_out():
    chat = chat_for_template(HISTORY[:1], ToolRequest((WEATHER,), "none"), native=False)
    assert chat.messages == HISTORY[:1]
    native = chat_for_template(HISTORY[:1], ToolRequest((WEATHER,), "none"), native=True)
    assert native.tools is None


def test_a_template_with_tool_support_gets_them_natively():
    source = (TEMPLATES / "qwen2.5.jinja").read_text()
    assert template_reads_tools(source)
    chat = chat_for_template(HISTORY, ToolRequest((WEATHER,)), native=True)
    assert chat.tools == [WEATHER.definition()]
    assert chat.messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    rendered = PromptBuilder(_Tokenizer(), source).render_chat(chat.messages, tools=chat.tools)
    assert '"name": "get_weather"' in rendered and "<tool_response>\nsunny" in rendered
    assert '{"city": "Paris"}' in rendered
