"""A reply read with the tokenizer's transformers response template.

The templates are the real-model fixtures of transformers' tests/utils/test_chat_parsing.py
(github.com/huggingface/transformers): ``smollm_template`` (SmolLM3, the Qwen3/Hermes layout:
``<think>`` reasoning, plain content, ``<tool_call>`` JSON calls; also the worked example of
docs/source/en/chat_response_parsing.md), its ``qwen3_template`` (the Qwen3-Coder XML calls),
``gemma4_template``, ``gpt_oss_template``, ``cohere_template`` and ``inkling_template``; most
replies are those tests' model outputs. transformers' own ``parse_response`` is the oracle: a
reply fed whole, in two pieces at every position, or a character at a time assembles to what
it parses.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from triton_mlx.serving.response_template import ResponseTemplateReader, has_response_template
from triton_mlx.serving.tool_calls import CallArguments, CallStart

DEMO = Path(__file__).resolve().parents[2] / "model_repository" / "SmolLM2-135M-Instruct"
CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
ASSISTANT = "<|im_start|>assistant\n"

QWEN3 = {  # transformers: smollm_template
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "thinking": {"open": "<think>", "close": "</think>", "content": "text"},
        "tool_calls": {
            "open": "<tool_call>", "close": "</tool_call>", "repeats": True, "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close": "<|im_end|>", "content": "text"},
    },
}
QWEN3_CODER = {  # transformers: qwen3_template
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "thinking": {"open": "<think>", "close": "</think>", "content": "text"},
        "tool_calls": {
            "open_pattern": r"<tool_call>\s*<function=(?P<name>\w+)>",
            "close": "</tool_call>",
            "repeats": True,
            "content": "xml-inline",
            "content_args": {
                "tag_pattern": r"<parameter=(?P<key>\w+)>\s*(?P<value>.*?)\s*</parameter>",
                "value_parser": {"name": "json", "args": {"allow_non_json": True}},
            },
            "transform": {"type": "function",
                          "function": {"name": "{name}", "arguments": "{content}"}},
        },
    },
}
GEMMA4 = {
    "defaults": {"role": "assistant"},
    "start_anchor": ["<|turn>model\n", "<tool_response|>"],
    "fields": {
        "thinking": {"open": "<|channel>thought\n", "close": "<channel|>", "content": "text"},
        "tool_calls": {
            "open_pattern": r"<\|tool_call>call:(?P<name>\w+)",
            "close": "<tool_call|>",
            "repeats": True,
            "content": "json",
            "content_args": {"unquoted_keys": True, "string_delims": [['<|"|>', '<|"|>']]},
            "transform": {"type": "function",
                          "function": {"name": "{name}", "arguments": "{content}"}},
        },
        "content": {"close": ["<turn|>", "<|tool_response>", "<eos>"], "content": "text"},
    },
}
GPT_OSS = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|start|>assistant",
    "fields": {
        "thinking": {"open": "<|channel|>analysis<|message|>", "close": "<|end|>",
                     "content": "text"},
        "content": {"open": "<|channel|>final<|message|>", "close": "<|end|>",
                    "content": "text"},
        "tool_calls": {
            "open_pattern": r"<\|channel\|>commentary to=functions\.(?P<name>\w+).*?<\|message\|>",
            "close": "<|call|>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function",
                          "function": {"name": "{name}", "arguments": "{content}"}},
        },
    },
}
COHERE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
    "fields": {
        "content": {"open": "<|START_RESPONSE|>", "close": "<|END_RESPONSE|>",
                    "content": "text"},
        "thinking": {"open": "<|START_THINKING|>", "close": "<|END_THINKING|>",
                     "content": "text"},
        "tool_calls": {
            "open": "<|START_ACTION|>", "close": "<|END_ACTION|>", "content": "json",
            "transform_each": True,
            "transform": {"type": "function",
                          "function": {"name": "{tool_name}", "arguments": "{parameters}"}},
        },
    },
}
INKLING = {  # every block framed; thinking and content repeat and join, unstripped
    "defaults": {"role": "assistant"},
    "start_anchor": "<|message_model|>",
    "fields": {
        "thinking": {
            "open_pattern": r"(?:<\|message_model\|>)?[^<]*<\|content_thinking\|>",
            "close": "<|end_message|>", "repeats": True, "join": "",
            "content_args": {"strip": False},
        },
        "content": {
            "open_pattern": r"(?:<\|message_model\|>)?[^<]*<\|content_text\|>",
            "close": "<|end_message|>", "repeats": True, "join": "",
            "content_args": {"strip": False},
        },
        "tool_calls": {
            "open_pattern": r"(?:<\|message_model\|>)?[^<]*<\|content_invoke_tool_json\|>",
            "close": "<|end_message|>", "repeats": True, "content": "json",
            "transform": {"type": "function",
                          "function": {"name": "{content.name}", "arguments": "{content.args}"}},
        },
    },
}
JOINED = {  # transformers: test_join_concatenates_repeated_matches
    "defaults": {"role": "assistant"},
    "start_anchor": "<|assistant|>",
    "fields": {
        "thinking": {"open": "<think>", "close": "</think>", "repeats": True, "join": " "},
        "content": {"repeats": True, "join": " "},
    },
}

COUNTER_TOOLS = [{"type": "function", "function": {
    "name": "count", "parameters": {"type": "object", "properties": {
        "times": {"type": "integer"}, "label": {"type": "string"}}}}}]

CASES = {
    "qwen3 think, text, two calls": (QWEN3, CHATML + ASSISTANT, (
        "<think>\nThe user wants the weather in Zürich.\n</think>\n\nLet me check.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}\n'
        '</tool_call><tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'), None),
    "qwen3 prompt opened the think block": (QWEN3, CHATML + ASSISTANT + "<think>\n", (
        "Just greet.\n</think>\n\nHello!  How can I help?\n<|im_end|>"), None),
    "qwen3 earlier turns are not this reply": (QWEN3, (
        CHATML + ASSISTANT + "<think>\nold\n</think>\n\nOld answer.<|im_end|>\n"
        "<|im_start|>user\nAgain<|im_end|>\n" + ASSISTANT), "New answer, no thinking.", None),
    "qwen3 think and text": (QWEN3, "", (
        '<think>\nOkay, the user asked, "Hey! Can you tell me about gravity?"</think>\n'
        "Some content about gravity goes here!"), None),
    "qwen3-coder xml call": (QWEN3_CODER, CHATML + ASSISTANT, (
        "<think>short thought</think>\n<tool_call>\n<function=get_weather>\n"
        '<parameter=locations>\n[{"country": "France", "city": "Paris"}]\n</parameter>\n'
        "<parameter=temp_units>\ncelsius\n</parameter>\n</function>\n</tool_call>"), None),
    "qwen3-coder typed by the tools": (QWEN3_CODER, "", (
        "<tool_call>\n<function=count>\n<parameter=times>\n007\n</parameter>\n"
        "<parameter=label>\nseven\n</parameter>\n</function>\n</tool_call>"), COUNTER_TOOLS),
    "gemma4 lax json": (GEMMA4, "<|turn>user\nHi<turn|>\n<|turn>model\n", (
        "<|channel>thought\nLet me call the tool.<channel|>"
        '<|tool_call>call:foo{bool_value:true,list_value:[<|"|>foo<|"|>,<|"|>bar<|"|>],'
        'null_value:null,number_value:1,string_value:<|"|>foo<|"|>,'
        'struct_value:{foo:<|"|>bar<|"|>}}<tool_call|>'), None),
    "gemma4 answer": (GEMMA4, "", "<|channel>thought\nhmm<channel|>It is 21°C.<turn|>", None),
    "gpt-oss call": (GPT_OSS, "", (
        "<|channel|>analysis<|message|>Let me check.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_current_weather "
        '<|constrain|>json<|message|>{"location": "San Francisco, CA"}<|call|>'), None),
    "gpt-oss answer": (GPT_OSS, "", (
        "<|channel|>analysis<|message|>User asks 2+2.<|end|><|start|>assistant"
        "<|channel|>final<|message|>4"), None),
    "cohere calls in one region": (COHERE, "", (
        "<|START_THINKING|>Two tools.<|END_THINKING|><|START_ACTION|>[\n"
        '{"tool_call_id": "0", "tool_name": "a", "parameters": {"x": 1}},\n'
        '{"tool_call_id": "1", "tool_name": "b", "parameters": {"y": "ü"}}\n]<|END_ACTION|>'),
        None),
    "inkling joined blocks": (INKLING, (
        "<|message_system|><|content_text|>Thinking effort level: 0.9<|end_message|>"
        "<|message_model|>"), (
        "<|content_thinking|>Consider the weather.<|end_message|>"
        "<|message_model|><|content_thinking|> Tokyo, probably.<|end_message|>"
        "<|message_model|><|content_text|>Checking the weather now.<|end_message|>"
        "<|message_model|>get_weather<|content_invoke_tool_json|>"
        '{"name":"get_weather","args":{"city":"Tokyo","units":"C"}}<|end_message|>'
        "<|content_model_end_sampling|>"), None),
    "joined, with an empty region": (JOINED, "", (
        "<think> first </think>middle <think></think> done<think>last</think>"), None),
}


@dataclass
class Reply:
    reasoning: str = ""
    content: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)
    events: list = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def base_tokenizer():
    return AutoTokenizer.from_pretrained(DEMO)


def with_template(tokenizer, template):
    tokenizer = copy.copy(tokenizer)
    tokenizer.response_template = copy.deepcopy(template)
    return tokenizer


def read(tokenizer, prompt, chunks, tools=None) -> Reply:
    ids = (f"call_{n}" for n in itertools.count())
    reader = ResponseTemplateReader(tokenizer, prompt, tools, lambda: next(ids))
    reply = Reply()
    for step in [*(reader.feed(chunk) for chunk in chunks), reader.finish()]:
        reasoning, content, events = step
        reply.reasoning += reasoning
        reply.content += content
        reply.events += events
    reply.calls = [(c.name, c.arguments) for c in reader.calls]
    reply.ids = [c.id for c in reader.calls]
    return reply


def every_way(text: str) -> list[list[str]]:
    return [[text], *([text[:i], text[i:]] for i in range(1, len(text))), list(text)]


def as_text(value) -> str:
    if value is None:
        return ""
    return "".join(value) if isinstance(value, list) else value


def oracle(tokenizer, prompt, text, tools) -> Reply:
    """What transformers' parse_response makes of the reply, in the reader's terms."""
    message = tokenizer.parse_response(text, prefix=prompt, tools=tools)
    calls = []
    for item in message.get("tool_calls", []):
        for call in item if isinstance(item, list) else [item]:
            function = call["function"]
            calls.append((function["name"],
                          json.dumps(function["arguments"], ensure_ascii=False)))
    return Reply(as_text(message.get("thinking")), as_text(message.get("content")), calls)


@pytest.mark.parametrize("case", list(CASES))
def test_every_split_reads_as_transformers_parses(base_tokenizer, case):
    template, prompt, text, tools = CASES[case]
    tokenizer = with_template(base_tokenizer, template)
    expected = oracle(tokenizer, prompt, text, tools)
    assert expected.reasoning or expected.content or expected.calls
    for chunks in every_way(text):
        reply = read(tokenizer, prompt, chunks, tools)
        assert (reply.reasoning, reply.content, reply.calls) == (
            expected.reasoning, expected.content, expected.calls), chunks


@pytest.mark.parametrize("case", list(CASES))
def test_call_events_assemble_to_the_calls(base_tokenizer, case):
    template, prompt, text, tools = CASES[case]
    reply = read(with_template(base_tokenizer, template), prompt, list(text), tools)
    starts = [e for e in reply.events if isinstance(e, CallStart)]
    assert [(s.index, s.id, s.name) for s in starts] == [
        (i, reply.ids[i], name) for i, (name, _) in enumerate(reply.calls)]
    for index, (_, arguments) in enumerate(reply.calls):
        events = reply.events[reply.events.index(starts[index]) + 1:]
        fragments = [e.fragment for e in events
                     if isinstance(e, CallArguments) and e.index == index]
        assert "".join(fragments) == arguments
        assert isinstance(json.loads(arguments), dict)


def test_readings_from_the_fixtures(base_tokenizer):
    """A few results spelled out, so the oracle is not the only witness."""
    def reply(case):
        template, prompt, text, tools = CASES[case]
        return read(with_template(base_tokenizer, template), prompt, [text], tools)

    first = reply("qwen3 think, text, two calls")
    assert first.reasoning == "The user wants the weather in Zürich."
    assert first.content == "Let me check."
    assert first.calls == [("get_weather", '{"city": "Zürich", "days": 2}'), ("get_time", "{}")]
    assert first.ids == ["call_0", "call_1"]
    opened = reply("qwen3 prompt opened the think block")
    assert (opened.reasoning, opened.content) == ("Just greet.", "Hello!  How can I help?")
    assert reply("qwen3 earlier turns are not this reply").reasoning == ""
    assert reply("qwen3-coder typed by the tools").calls == [
        ("count", '{"times": 7, "label": "seven"}')]
    assert reply("cohere calls in one region").calls == [("a", '{"x": 1}'), ("b", '{"y": "ü"}')]
    inkling = reply("inkling joined blocks")
    assert inkling.reasoning == "Consider the weather. Tokyo, probably."
    joined = reply("joined, with an empty region")
    assert (joined.reasoning, joined.content) == ("first  last", "middle done")


def test_text_streams_before_its_region_closes(base_tokenizer):
    tokenizer = with_template(base_tokenizer, QWEN3)
    reader = ResponseTemplateReader(tokenizer, CHATML + ASSISTANT, None, lambda: "call_x")
    assert reader.feed("<think>\nI am thinking") == ("I am thinking", "", [])
    assert reader.feed(" hard  ") == (" hard", "", [])  # trailing spaces wait
    assert reader.feed("</think>\n\nSure") == ("", "Sure", [])
    assert reader.feed(", here.\n<tool_call>") == ("", ", here.", [])
    assert reader.feed('{"name": "f", "arguments": {"a": 1}}') == ("", "", [])
    assert reader.feed("</tool_call>") == (
        "", "", [CallStart(0, "call_x", "f"), CallArguments(0, '{"a": 1}')])
    assert reader.finish() == ("", "", [])
    assert reader.finish() == ("", "", [])
    with pytest.raises(RuntimeError):
        reader.feed("more")


def test_content_around_calls_is_kept_whole(base_tokenizer):
    """The implicit content region occurs again after each call; transformers keeps only its
    last occurrence (here "Done."; with nothing but a newline after the calls, no content at
    all), the reader keeps all of its text, stripped at the two ends."""
    tokenizer = with_template(base_tokenizer, QWEN3)
    text = ('Sure.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n'
            '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>\nDone.\n')
    for chunks in every_way(text):
        reply = read(tokenizer, "", chunks)
        assert (reply.content, reply.calls) == ("Sure.\n\n\nDone.", [("f", "{}"), ("g", "{}")])
    trailing = read(tokenizer, "", [text.removesuffix("Done.\n")])
    assert trailing.content == "Sure."


@pytest.mark.parametrize("text, content, calls", [
    ('Wait.<tool_call>\n{"name": "get_weather", "argu',
     'Wait.\n{"name": "get_weather", "argu', []),
    ('<tool_call>{"name": "f", oops}</tool_call>\n<tool_call>{"name": "g", "arguments": {}}'
     "</tool_call>", '{"name": "f", oops}', [("g", "{}")]),
    ('<tool_call>{"arguments": {"a": 1}}</tool_call>', '{"arguments": {"a": 1}}', []),
    ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>ok',
     '{"name": "f", "arguments": [1]}ok', []),
])
def test_a_region_that_is_no_call_comes_back_as_content(base_tokenizer, caplog, text, content,
                                                         calls):
    tokenizer = with_template(base_tokenizer, QWEN3)
    with caplog.at_level(logging.WARNING, logger="triton_mlx.serving"):
        for chunks in every_way(text):
            reply = read(tokenizer, "", chunks)
            assert (reply.content, reply.calls) == (content, calls), chunks
    assert "tool_calls region" in caplog.text


def test_a_parser_failure_never_ends_the_reply(base_tokenizer, monkeypatch, caplog):
    reader = ResponseTemplateReader(with_template(base_tokenizer, QWEN3), "", None, lambda: "id")
    assert reader.feed("<think>a") == ("a", "", [])

    def broken(text):
        raise RuntimeError("a parser bug")

    monkeypatch.setattr(reader._parser, "feed", broken)
    with caplog.at_level(logging.ERROR, logger="triton_mlx.serving"):
        assert reader.feed("b</think>c") == ("", "b</think>c", [])
    assert "parser failed" in caplog.text
    assert reader.feed("d") == ("", "d", [])
    assert reader.finish() == ("", "", [])


def test_a_missing_required_field_does_not_fail_the_reply(base_tokenizer):
    template = copy.deepcopy(QWEN3)
    template["fields"]["tool_calls"]["optional"] = False
    reply = read(with_template(base_tokenizer, template), "", ["Just text."])
    assert (reply.content, reply.calls) == ("Just text.", [])


def test_arguments_given_as_json_text(base_tokenizer):
    tokenizer = with_template(base_tokenizer, QWEN3)
    text = '<tool_call>{"name": "f", "arguments": "{\\"q\\": \\"é\\"}"}</tool_call>'
    assert read(tokenizer, "", [text]).calls == [("f", '{"q": "é"}')]


def test_which_tokenizers_carry_a_template(base_tokenizer):
    assert not has_response_template(base_tokenizer)
    assert has_response_template(with_template(base_tokenizer, QWEN3))
    assert not has_response_template(with_template(base_tokenizer, {**QWEN3, "version": 2}))
    with pytest.raises(ValueError):
        ResponseTemplateReader(base_tokenizer, "", None, lambda: "id")


def test_a_template_in_tokenizer_config_reaches_the_mlx_tokenizer(tmp_path):
    from mlx_lm.utils import load_tokenizer

    for name in ("tokenizer.json", "special_tokens_map.json", "config.json"):
        shutil.copy(DEMO / name, tmp_path / name)
    config = json.loads((DEMO / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({**config, "response_template": QWEN3}))
    tokenizer = load_tokenizer(tmp_path)
    assert has_response_template(tokenizer)
    reply = read(tokenizer, ASSISTANT, ['<think>x</think>y<tool_call>{"name": "f"}</tool_call>'])
    assert (reply.reasoning, reply.content, reply.calls) == ("x", "y", [("f", "{}")])
