"""Chat templates render exactly as transformers' ``apply_chat_template`` renders them.

transformers is the oracle here only: the server renders with its own sandboxed Jinja2. Every
template the test suite uses, plus well-known ones with tools (``templates/*.jinja``, each naming
its source on its first line), is rendered both ways over a set of conversations; the outcome
must be the same text, or a failure on both sides (a ``PromptError`` on ours).
"""

from __future__ import annotations

import datetime as real_datetime
import json
from pathlib import Path

import pytest
import transformers.utils.chat_template_utils as hf_chat_templates
from mlx_lm.tokenizer_utils import TokenizerWrapper
from transformers import AutoTokenizer

import triton_mlx.serving.prompts as prompts_module
from tests.tiny_model import CHATML_TEMPLATE, build_tiny_model
from triton_mlx.serving.prompts import ChatTemplateError, PromptBuilder, PromptError

DEMO_MODEL = Path(__file__).parents[2] / "model_repository" / "SmolLM2-135M-Instruct"
TEMPLATE_FILES = sorted((Path(__file__).parent / "templates").glob("*.jinja"))

# Every variable and helper transformers gives a template, printed, so that any difference in
# the environment shows up as different text.
PROBE_TEMPLATE = """\
{%- set ns = namespace(count=0) -%}
{%- for m in messages -%}
{%- if m.role == 'system' %}{% continue %}{% endif -%}
{%- set ns.count = ns.count + 1 -%}
{% generation %}[{{ m.role }}] {{ m | tojson }}{% endgeneration %}
{% endfor %}
{% for d in documents or [] %}
    {% if d.title %}
  doc: {{ d.title }}
    {% endif %}
{% endfor %}
count={{ ns.count }} dict={{ dict(a=1) | tojson }} keys={{ dict.fromkeys(['x']) | tojson }}
bos={{ bos_token }} eos={{ eos_token }} unk={{ unk_token }} pad={{ pad_token }}
sep defined={{ sep_token is defined }} mask defined={{ mask_token is defined }}
tools={{ tools | tojson }} documents={{ documents | tojson }}
thinking={{ enable_thinking is defined and enable_thinking }} custom={{ custom | default('-') }}
date={{ strftime_now('%Y-%m-%d') }}
{%- if add_generation_prompt %}
<assistant>{% endif %}"""

# The templates other tests use: the tiny model's, the demo model's, test_errors' override.
SUITE_TEMPLATES = {
    "tiny-chatml": CHATML_TEMPLATE,
    "demo-smollm2": json.loads((DEMO_MODEL / "tokenizer_config.json").read_text())["chat_template"],
    "role-brackets": "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}",
    "probe": PROBE_TEMPLATE,
}
TEMPLATES = SUITE_TEMPLATES | {path.stem: path.read_text() for path in TEMPLATE_FILES}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                         "description": "Temperature unit"},
            },
            "required": ["city"],
        },
    },
}
CLOCK_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time now, as <hh:mm> & zone.",
                 "parameters": {"type": "object", "properties": {}}},
}
CALL = {"id": "abcDEF123", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
CALL_AS_JSON_TEXT = {**CALL, "function": {"name": "get_weather",
                                          "arguments": '{"city": "Paris"}'}}
SYSTEM = {"role": "system", "content": "You are terse. /think"}
ASK = {"role": "user", "content": "What's the weather in Paris? Réponds <vite> & bien."}

# (messages, keyword arguments for both renderers; add_generation_prompt defaults to True)
CONVERSATIONS = {
    "plain": ([{"role": "user", "content": "Hello!"}], {}),
    "system-multi-turn": ([SYSTEM, {"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello. "},
                           {"role": "user", "content": "Bye"}], {}),
    "tool-calls": ([ASK, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                    {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temp": 21}'},
                    {"role": "assistant", "content": "21 degrees."},
                    {"role": "user", "content": "Thanks"}], {"tools": [WEATHER_TOOL]}),
    "tool-call-arguments-as-text": ([ASK, {"role": "assistant", "content": None,
                                           "tool_calls": [CALL_AS_JSON_TEXT]},
                                     {"role": "tool", "tool_call_id": "abcDEF123",
                                      "content": "sunny"}], {"tools": [WEATHER_TOOL]}),
    "tools-given": ([SYSTEM, ASK], {"tools": [WEATHER_TOOL, CLOCK_TOOL]}),
    "documents-given": ([ASK], {"documents": [{"title": "Météo", "text": "Sunny <b>all</b> day"},
                                              {"title": "Almanac", "text": "Rain in May"}]}),
    "thinking-off": ([ASK], {"template_kwargs": {"enable_thinking": False}}),
    "thinking-on": ([SYSTEM, ASK], {"template_kwargs": {"enable_thinking": True}}),
    "extra-variable": ([ASK], {"template_kwargs": {"custom": "yes", "date_string": "01 Jan 2025"}}),
    "reasoning-in-history": ([ASK, {"role": "assistant", "content": "Sunny.",
                                    "reasoning_content": "Check the sky."}], {}),
    "no-generation-prompt": ([ASK, {"role": "assistant", "content": "Sunny."}],
                             {"add_generation_prompt": False}),
    "continue-final-message": ([ASK, {"role": "assistant", "content": "The weather is "}],
                               {"add_generation_prompt": False, "continue_final_message": True}),
}

FIXED_NOW = real_datetime.datetime(2025, 3, 14, 15, 9, 26)


class _FrozenDatetime(real_datetime.datetime):
    """``strftime_now`` reads the clock on both sides: freeze it so midnight cannot split them."""

    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(hf_chat_templates, "datetime", _FrozenDatetime)
    monkeypatch.setattr(prompts_module, "datetime", _FrozenDatetime)


@pytest.fixture(scope="module")
def hf_tokenizer():
    return AutoTokenizer.from_pretrained(str(DEMO_MODEL))


@pytest.fixture(scope="module")
def wrapped(hf_tokenizer):
    """The tokenizer as the server holds it: mlx-lm's wrapper around the Hugging Face one."""
    return TokenizerWrapper(hf_tokenizer)


def oracle(hf_tokenizer, template, messages, *, template_kwargs=None, **options):
    """transformers' rendering, or None when transformers refuses the input."""
    options.setdefault("add_generation_prompt", True)
    try:
        return hf_tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, **options, **(template_kwargs or {})
        )
    except Exception:  # noqa: BLE001 - any refusal counts; ours must be a PromptError then
        return None


def ours(tokenizer, template, messages, **options):
    """Our rendering, or None when it refuses the input with a PromptError."""
    try:
        return PromptBuilder(tokenizer, template).render_chat(messages, **options)
    except PromptError:
        return None


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("template_name", sorted(TEMPLATES))
def test_rendering_matches_transformers(wrapped, hf_tokenizer, template_name, conversation):
    messages, options = CONVERSATIONS[conversation]
    template = TEMPLATES[template_name]
    expected = oracle(hf_tokenizer, template, messages, **options)
    assert ours(wrapped, template, messages, **options) == expected


@pytest.mark.parametrize("template_name", sorted(TEMPLATES))
def test_every_template_renders_a_chat_with_tools(wrapped, template_name):
    """Keeps the comparison above honest: each template really renders, not only fails."""
    messages, options = CONVERSATIONS["tools-given"]
    text = PromptBuilder(wrapped, TEMPLATES[template_name]).render_chat(messages, **options)
    assert "Paris" in text


@pytest.mark.parametrize("template_name", ["qwen3", "smollm3"])
def test_enable_thinking_changes_what_thinking_templates_render(wrapped, template_name):
    builder = PromptBuilder(wrapped, TEMPLATES[template_name])
    messages = [{"role": "user", "content": "Hi"}]
    on = builder.render_chat(messages, template_kwargs={"enable_thinking": True})
    off = builder.render_chat(messages, template_kwargs={"enable_thinking": False})
    assert on != off and "<think>\n\n</think>" in off


def test_the_tiny_models_template_with_its_own_tokenizer(tmp_path):
    folder = build_tiny_model(tmp_path / "tiny")
    hf = AutoTokenizer.from_pretrained(str(folder))
    messages = [{"role": "user", "content": "Hello world!"}]
    for template in (CHATML_TEMPLATE, PROBE_TEMPLATE):
        assert ours(hf, template, messages) == oracle(hf, template, messages)
    ids = PromptBuilder(TokenizerWrapper(hf), CHATML_TEMPLATE).chat(messages)
    assert ids == hf.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)


def test_the_wrapper_and_the_tokenizer_inside_render_alike(wrapped, hf_tokenizer):
    messages, options = CONVERSATIONS["tools-given"]
    assert (PromptBuilder(wrapped, PROBE_TEMPLATE).render_chat(messages, **options)
            == PromptBuilder(hf_tokenizer, PROBE_TEMPLATE).render_chat(messages, **options))


@pytest.mark.parametrize("expression", [
    "tojson",
    "tojson(separators=(',', ':'))",
    "tojson(indent=2)",
    "tojson(sort_keys=True)",
    "tojson(ensure_ascii=True)",
    "tojson(indent=4, sort_keys=True, separators=(',', ': '), ensure_ascii=True)",
])
def test_tojson_takes_transformers_keyword_arguments(wrapped, hf_tokenizer, expression):
    template = "{{ messages | " + expression + " }}"
    messages = [{"role": "user", "content": "Zoë <b>&</b> 'quotes'", "z": [1, 2.5, None]}]
    expected = oracle(hf_tokenizer, template, messages)
    assert expected is not None
    assert ours(wrapped, template, messages) == expected


def test_tojson_with_an_unknown_keyword_is_a_prompt_error(wrapped):
    builder = PromptBuilder(wrapped, "{{ messages | tojson(colour='red') }}")
    with pytest.raises(PromptError, match="TypeError"):
        builder.render_chat([{"role": "user", "content": "Hi"}])


def test_a_type_error_inside_the_template_is_a_prompt_error(wrapped, hf_tokenizer):
    template = "{{ messages[0].content | int + 'x' }}"
    messages = [{"role": "user", "content": "Hi"}]
    with pytest.raises(TypeError):  # what transformers lets escape
        hf_tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    with pytest.raises(PromptError, match="TypeError"):
        PromptBuilder(wrapped, template).render_chat(messages)


@pytest.mark.parametrize("template, words", [
    ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
    ("{{ messages[0].missing.deeper }}", "UndefinedError"),
    ("{{ messages[5].content }}", "UndefinedError"),
    ("{% set ns = namespace(_secret=1) %}", "underscore"),
    ("{% set ns = namespace() %}{% set ns._secret = 1 %}", "underscore"),
    ("{{ messages.append(1) }}", "SecurityError"),
])
def test_failures_inside_the_template_are_prompt_errors(wrapped, hf_tokenizer, template, words):
    messages = [{"role": "user", "content": "Hi"}]
    assert oracle(hf_tokenizer, template, messages) is None
    with pytest.raises(PromptError, match=words):
        PromptBuilder(wrapped, template).render_chat(messages)


def test_a_namespace_with_plain_names_still_works(wrapped):
    template = "{% set ns = namespace(n=1) %}{% set ns.n = ns.n + 1 %}{{ ns.n }}"
    assert PromptBuilder(wrapped, template).render_chat([{"role": "user", "content": "Hi"}]) == "2"


def test_a_template_that_does_not_compile_fails_at_construction(wrapped):
    with pytest.raises(ChatTemplateError, match=r"does not compile \(line 2\)"):
        PromptBuilder(wrapped, "{% for m in messages %}\n{{ m.content }")


def test_a_template_with_an_unknown_tag_fails_at_construction(wrapped):
    with pytest.raises(ChatTemplateError, match="does not compile"):
        PromptBuilder(wrapped, "{% generate %}x{% endgenerate %}")


def test_without_a_template_chat_is_refused(wrapped):
    builder = PromptBuilder(wrapped, None)
    assert not builder.has_chat_template
    with pytest.raises(PromptError, match="no chat template"):
        builder.render_chat([{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize("messages, options, words", [
    ([], {}, "non-empty"),
    (["not an object"], {}, "object"),
    ([{"role": "user", "content": "Hi"}], {"continue_final_message": True},
     "cannot both be set"),
    ([{"role": "user", "content": "Hi"}], {"template_kwargs": {"messages": []}}, "messages"),
    ([{"role": "user", "content": "Hi"}], {"tools": ["get_weather"]}, "tools"),
    ([{"role": "user", "content": "Hi"}], {"documents": "text"}, "documents"),
    ([{"role": "user"}], {"add_generation_prompt": False, "continue_final_message": True},
     "no content"),
])
def test_inputs_transformers_refuses_are_prompt_errors(wrapped, hf_tokenizer, messages, options,
                                                       words):
    assert oracle(hf_tokenizer, CHATML_TEMPLATE, messages, **options) is None
    with pytest.raises(PromptError, match=words):
        PromptBuilder(wrapped, CHATML_TEMPLATE).render_chat(messages, **options)


def test_continuing_leaves_the_callers_messages_alone(wrapped):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]
    before = json.dumps(messages)
    text = PromptBuilder(wrapped, CHATML_TEMPLATE).render_chat(
        messages, add_generation_prompt=False, continue_final_message=True)
    assert text.endswith("<|im_start|>assistant\nHel")
    assert json.dumps(messages) == before


NAMED_TEMPLATES = {
    "default": "{% for m in messages %}{{ m.content }}{% endfor %}[default]",
    "tool_use": "{{ tools | length }} tools: {% for m in messages %}{{ m.content }}{% endfor %}",
}


@pytest.mark.parametrize("tools", [None, [WEATHER_TOOL]])
def test_named_templates_are_chosen_as_transformers_chooses(tools):
    hf = AutoTokenizer.from_pretrained(str(DEMO_MODEL))
    hf.chat_template = dict(NAMED_TEMPLATES)
    messages = [{"role": "user", "content": "Hi"}]
    expected = hf.apply_chat_template(messages, tools=tools, tokenize=False,
                                      add_generation_prompt=True)
    assert PromptBuilder(hf, NAMED_TEMPLATES).render_chat(messages, tools=tools) == expected


def test_named_templates_without_a_default_refuse_a_chat_without_tools():
    only_tools = {"tool_use": NAMED_TEMPLATES["tool_use"]}
    builder = PromptBuilder(AutoTokenizer.from_pretrained(str(DEMO_MODEL)), only_tools)
    with pytest.raises(PromptError, match="no default"):
        builder.render_chat([{"role": "user", "content": "Hi"}])
    assert builder.render_chat([{"role": "user", "content": "Hi"}], tools=[]) == "0 tools: Hi"


def test_a_broken_named_template_fails_at_construction(wrapped):
    with pytest.raises(ChatTemplateError, match="'tool_use' does not compile"):
        PromptBuilder(wrapped, {"default": "ok", "tool_use": "{% if tools %}"})


def test_chat_token_ids_match_transformers(wrapped, hf_tokenizer):
    messages, options = CONVERSATIONS["tool-calls"]
    template = TEMPLATES["qwen2.5"]
    expected = hf_tokenizer.apply_chat_template(
        messages, chat_template=template, add_generation_prompt=True, return_dict=False, **options)
    assert PromptBuilder(wrapped, template).chat(messages, **options) == expected
