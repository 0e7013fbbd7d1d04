"""detect_format on real chat templates, and the detected parser reading each template's calls.

Templates come from tests/serving/templates (shared with the prompt tests) and from
tests/serving/tool_calls/templates (excerpts for formats not there); each names its source on
its first line. The round trip renders an assistant turn with a tool call through the template
(plain Jinja2, configured as transformers configures it) and parses the rendered text with the
parser ``detect_format`` chose: the call must come back as it went in.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.serving.tool_calls.helpers import WEATHER_TOOLS, parse_every_way
from triton_mlx.serving.tool_calls import detect_format

SHARED = Path(__file__).parents[1] / "templates"
OURS = Path(__file__).parent / "templates"
DEMO_MODEL = Path(__file__).parents[3] / "model_repository" / "SmolLM2-135M-Instruct"

EXPECTED = {
    SHARED / "hermes-3-tool-use.jinja": "hermes",
    SHARED / "qwen2.5.jinja": "hermes",
    SHARED / "qwen3.jinja": "hermes",
    SHARED / "llama-3.1.jinja": "llama3_json",
    SHARED / "llama-3.2.jinja": "llama3_json",
    SHARED / "mistral-nemo.jinja": "mistral",
    SHARED / "smollm3.jinja": "default",  # renders xml_tools, never `tools`
    OURS / "qwen3-coder.jinja": "qwen3_coder",
    OURS / "mistral-small-3.2.jinja": "mistral",
    OURS / "llama-3.2-pythonic.jinja": "pythonic",
    OURS / "llama-4-pythonic.jinja": "pythonic",
    OURS / "toolace.jinja": "pythonic",
    OURS / "granite-3.3.jinja": None,  # renders tools, calls in a format not parsed here
}


@pytest.mark.parametrize("path", list(EXPECTED), ids=lambda p: p.name)
def test_real_templates(path):
    assert detect_format(path.read_text()) == EXPECTED[path]


def test_every_fixture_is_a_valid_template_and_listed():
    for path in sorted(OURS.glob("*.jinja")):
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(path.read_text())
        assert path in EXPECTED


def test_no_template_or_no_tools_means_the_default_prompt():
    demo = json.loads((DEMO_MODEL / "tokenizer_config.json").read_text())["chat_template"]
    assert detect_format(demo) == "default"
    assert detect_format(None) == "default"
    assert detect_format("") == "default"
    # `tools` only in the text, a comment, or as another variable's part: not used
    text_only = (
        "{# tools are not supported #}{% for m in messages %}{{ 'Use tools: <tool_call>' }}"
        "{{ m.content }}{{ message.tools }}{% endfor %}{{ xml_tools }}"
    )
    assert detect_format(text_only) == "default"


def test_tools_in_an_unknown_format():
    template = (
        "{% if tools %}<|tools|>{{ tools | tojson }}{% endif %}"
        "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    assert detect_format(template) is None


def _environment() -> ImmutableSandboxedEnvironment:
    def tojson(value, indent=None, **_):
        return json.dumps(value, ensure_ascii=False, indent=indent)

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


ROUND_TRIP = [
    SHARED / "hermes-3-tool-use.jinja",
    SHARED / "qwen2.5.jinja",
    SHARED / "llama-3.1.jinja",
    SHARED / "llama-3.2.jinja",
    SHARED / "mistral-nemo.jinja",
    OURS / "qwen3-coder.jinja",
    OURS / "mistral-small-3.2.jinja",
]
END_TOKENS = ("<|im_end|>\n", "</s>", "<|eot_id|>")


@pytest.mark.parametrize("path", ROUND_TRIP, ids=lambda p: p.name)
def test_a_template_rendered_call_parses_back(path):
    template = _environment().from_string(path.read_text())
    user = {"role": "user", "content": "Weather in Paris for 3 days?"}
    call = {
        "id": "a1B2c3D4e",
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}},
    }
    assistant = {"role": "assistant", "content": "", "tool_calls": [call]}
    common = {"tools": WEATHER_TOOLS, "bos_token": "<s>", "eos_token": "</s>"}
    prompt = template.render(messages=[user], add_generation_prompt=True, **common)
    whole = template.render(messages=[user, assistant], add_generation_prompt=False, **common)
    assert whole.startswith(prompt)
    reply = whole[len(prompt):]
    for token in END_TOKENS:
        reply = reply.removesuffix(token)
    result = parse_every_way(detect_format(path.read_text()), reply, WEATHER_TOOLS)
    assert result.calls == [("get_weather", {"city": "Paris", "days": 3})]
    assert (result.text, result.malformed) == ("", False)
