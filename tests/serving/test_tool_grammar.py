"""The tool grammars, two-sided: for each call format and ``tool_choice``, text a valid reply
would hold is accepted whole and text that breaks the request's rules is refused, token by
token through llguidance with the demo model's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import llguidance
import pytest

from triton_mlx.serving.tool_grammar import chat_grammar
from triton_mlx.serving.tools import Tool, ToolRequest

DEMO = Path(__file__).resolve().parents[2] / "model_repository" / "SmolLM2-135M-Instruct"

WEATHER = Tool("get_weather", {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"], "additionalProperties": False})
TIME = Tool("get_time", {"type": "object", "properties": {"zone": {"type": "string"}},
                         "required": ["zone"]})

HERMES = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
HERMES_TIME = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
HERMES_BAD = '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Paris"}}\n</tool_call>'
QWEN = ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>")
LLAMA = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
MISTRAL = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]'
PYTHONIC = '[get_weather(city="Paris", days=3), get_time(zone="UTC")]'


@pytest.fixture(scope="module")
def matcher():
    from mlx_lm.utils import load_tokenizer

    from triton_mlx.engine.tokenizer_access import grammar_tokenizer

    tokenizer = load_tokenizer(DEMO)
    llg = grammar_tokenizer(tokenizer, [tokenizer.eos_token_id])

    def accepts(grammar: str, text: str) -> bool:
        m = llguidance.LLMatcher(llg, grammar, log_level=0)
        assert not m.is_error(), m.get_error()
        ok = all(m.consume_token(t) for t in tokenizer.encode(text, add_special_tokens=False))
        return ok and m.is_accepting()

    return accepts


def grammar(fmt: str, choice: str = "auto", *, parallel: bool = True, function: str | None = None,
            text: str | None = None, reasoning: tuple[str, str, bool] | None = None) -> str:
    result = chat_grammar(tools=ToolRequest((WEATHER, TIME), choice, function, parallel),
                          tool_format=fmt, text_grammar=text, reasoning=reasoning,
                          token_id=lambda marker: None)
    assert result is not None
    return result


CASES = [
    # format, choice, parallel, function, text, accepted
    ("hermes", "auto", True, None, "Hello there", True),
    ("hermes", "auto", True, None, "Let me check. " + HERMES, True),
    ("hermes", "auto", True, None, HERMES + "\n" + HERMES_TIME, True),
    ("hermes", "auto", True, None, HERMES_BAD, False),
    ("hermes", "auto", True, None, "Hi <tool_call>\nnot a call", False),
    ("hermes", "auto", False, None, HERMES, True),
    ("hermes", "auto", False, None, HERMES + "\n" + HERMES_TIME, False),
    ("hermes", "required", True, None, HERMES + "\n" + HERMES_TIME, True),
    ("hermes", "required", True, None, "Hello", False),
    ("hermes", "required", True, None, "Sure. " + HERMES, False),
    ("hermes", "required", False, None, HERMES + "\n" + HERMES_TIME, False),
    ("hermes", "function", True, "get_time", HERMES_TIME, True),
    ("hermes", "function", True, "get_time", HERMES, False),
    ("hermes", "function", True, "get_time", HERMES_TIME + "\n" + HERMES_TIME, False),
    ("default", "required", True, None, HERMES, True),
    ("qwen3_coder", "auto", True, None, "Checking. " + QWEN, True),
    ("qwen3_coder", "auto", True, None, "Hello", True),
    ("qwen3_coder", "required", True, None, QWEN, True),
    ("qwen3_coder", "required", True, None, QWEN.replace("\n3\n", "\nthree\n"), False),
    ("llama3_json", "auto", True, None, LLAMA, True),
    ("llama3_json", "auto", True, None, "Hello", True),
    ("llama3_json", "auto", True, None, '{"name": "other", "parameters": {}}', False),
    ("llama3_json", "required", True, None, LLAMA + "; " + LLAMA, True),
    ("llama3_json", "required", False, None, LLAMA + "; " + LLAMA, False),
    ("mistral", "auto", True, None, "Sure. " + MISTRAL, True),
    ("mistral", "required", True, None, "Hello", False),
    ("mistral", "required", True, None, MISTRAL, True),
    ("pythonic", "auto", True, None, PYTHONIC, True),
    ("pythonic", "auto", True, None, "Hello", True),
    ("pythonic", "auto", True, None, "[get_weather(days=3)]", False),
    ("pythonic", "required", False, None, PYTHONIC, False),
    ("pythonic", "required", False, None, '[get_weather(city="Rome")]', True),
]


@pytest.mark.parametrize(("fmt", "choice", "parallel", "function", "text", "accepted"), CASES)
def test_calls_are_held_to_the_request(matcher, fmt, choice, parallel, function, text, accepted):
    assert matcher(grammar(fmt, choice, parallel=parallel, function=function), text) is accepted


def test_a_response_format_is_the_text_alternative(matcher):
    schema = llguidance.LLMatcher.grammar_from_json_schema(
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
    combined = grammar("hermes", text=schema)
    assert matcher(combined, '{"a": 1}')
    assert matcher(combined, HERMES)
    assert not matcher(combined, "Hello")


def test_reasoning_comes_first_and_is_free(matcher):
    thinking = grammar("hermes", reasoning=("<think>", "</think>", False))
    assert matcher(thinking, "<think>\nMaybe <tool_call> now?\n</think>\n\n" + HERMES)
    assert matcher(thinking, "<think>\nhm\n</think>\n\nHello")
    assert not matcher(thinking, "<think>\nhm\n</think>\n\n" + HERMES_BAD)
    inside = grammar("hermes", "required", reasoning=("<think>", "</think>", True))
    assert matcher(inside, "it needs a call\n</think>\n\n" + HERMES)
    assert not matcher(inside, "it needs a call\n</think>\n\nHello")


def test_no_tools_and_no_format_need_no_grammar():
    assert chat_grammar(tools=None, tool_format="hermes", text_grammar=None, reasoning=None,
                        token_id=lambda m: None) is None
    none = ToolRequest((WEATHER,), "none")
    assert chat_grammar(tools=none, tool_format="hermes", text_grammar=None, reasoning=None,
                        token_id=lambda m: None) is None


def test_special_token_markers_become_token_references():
    result = chat_grammar(tools=ToolRequest((WEATHER,), "required"), tool_format="hermes",
                          text_grammar=None, reasoning=None,
                          token_id={"<tool_call>": 7, "</tool_call>": 8}.get)
    lark = json.loads(result)["grammars"][0]["lark_grammar"]
    assert "call: <[7]> call_rest" in lark and '"<tool_call>"' not in lark


def test_a_special_token_marker_matches_that_token_only(matcher_tokens):
    """With the markers as special tokens (the demo vocabulary's <|im_start|> and <|im_end|>
    stand in), the call must use those tokens, not the marker's text."""
    tokenizer, accepts_ids = matcher_tokens
    ids = {"<tool_call>": 1, "</tool_call>": 2}
    result = chat_grammar(tools=ToolRequest((WEATHER,), "required"), tool_format="hermes",
                          text_grammar=None, reasoning=None, token_id=ids.get)
    body = tokenizer.encode('\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n',
                            add_special_tokens=False)
    assert accepts_ids(result, [1, *body, 2])
    assert not accepts_ids(result, tokenizer.encode(HERMES, add_special_tokens=False))


@pytest.fixture(scope="module")
def matcher_tokens():
    from mlx_lm.utils import load_tokenizer

    from triton_mlx.engine.tokenizer_access import grammar_tokenizer

    tokenizer = load_tokenizer(DEMO)
    llg = grammar_tokenizer(tokenizer, [tokenizer.eos_token_id])

    def accepts_ids(grammar: str, ids: list[int]) -> bool:
        m = llguidance.LLMatcher(llg, grammar, log_level=0)
        assert not m.is_error(), m.get_error()
        return all(m.consume_token(t) for t in ids) and m.is_accepting()

    return tokenizer, accepts_ids
