"""Reasoning splitting: what a client sees in ``reasoning_content`` and ``content``.

Outputs are the families' own, as their model cards and maintainers quote them; prompts are
rendered from the real chat templates in ``templates/``. Every output is also split at every
character position and fed one character at a time: the client must see the same reasoning and
content however the engine's deltas happen to cut the text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from triton_mlx.serving.prompts import PromptBuilder
from triton_mlx.serving.reasoning import (
    ReasoningSplitter,
    ReasoningTags,
    reasoning_tags,
    split_reasoning,
    starts_inside,
)

TAGS = ReasoningTags()
TEMPLATE_DIR = Path(__file__).parent / "templates"
DEMO_MODEL = Path(__file__).parents[2] / "model_repository" / "SmolLM2-135M-Instruct"
REASONING_TEMPLATES = ["deepseek-r1-distill-qwen", "qwen3", "qwq-32b", "smollm3"]
PLAIN_TEMPLATES = ["hermes-3-tool-use", "llama-3.1", "llama-3.2", "mistral-nemo", "qwen2.5"]

# Qwen3 deciding to call a tool: the reasoning as quoted from a Qwen3 run in JetBrains Koog's
# examples, then the Hermes-style call that Qwen3's template asks for.
QWEN3_TOOL_CALL = (
    "<think>\nOkay, the user is asking about the current temperature and what to wear. Let me "
    "check the available tools. There's a temperatureTool that can get the current temperature "
    "in Celsius. I need to call that first. Once I have the temperature, I can decide on the "
    "appropriate clothing advice. Let me use the temperatureTool now.\n</think>\n\n"
    '<tool_call>\n{"name": "temperatureTool", "arguments": {}}\n</tool_call>'
)
# DeepSeek-R1 after its generation prompt's "<think>\n" (deepseek-ai/DeepSeek-R1 discussion
# 144 quotes this reasoning: the output then never shows the open tag).
DEEPSEEK_INSIDE = (
    "Okay, the user is asking why 1 + 1 equals 2. Let me think about how to approach this.\n\n"
    "First, I should consider their background. They might not have a deep math understanding, "
    "so I need to explain it in simple terms. Maybe start with basic arithmetic principles.\n\n"
    "I recall that in Peano axioms, numbers are defined incrementally. So 1 is S(0), and 2 is "
    "S(S(0)).\n</think>\n\n"
    "**1 + 1 = 2** because 2 is *defined* as the number that comes after 1."
)
# The same reasoning as the old template's DeepSeek-R1 wrote it, opening the block itself.
DEEPSEEK_OPENING = "<think>\n" + DEEPSEEK_INSIDE
# Qwen3 told "/no_think" (its model card: "an empty thinking block"); DeepSeek's card also
# warns that R1 models sometimes bypass thinking this way.
EMPTY_BLOCK = "<think>\n\n</think>\n\nParis is the capital of France."
# Qwen2.5 and every model without reasoning.
NO_REASONING = "The capital of France is Paris."
# SmolLM3 in /think mode (one newline after the close tag, as its template writes it).
SMOLLM3 = "<think>\nThe user wants 12 * 12. That is 144.\n</think>\n12 * 12 = 144."
UNICODE = (
    "<think>\n好的，用户问的是“你好”的意思。🤔 Ça dépend du contexte…\n</think>\n\n"
    "“你好”的意思是 hello 👋。"
)


def split_whole(text: str, inside: bool = False) -> tuple[str, str]:
    return split_reasoning(text, TAGS, inside)


def split_in_chunks(chunks: list[str], inside: bool = False) -> tuple[str, str]:
    splitter = ReasoningSplitter(TAGS, inside)
    reasoning, content = "", ""
    for chunk in [*chunks, None]:
        delta = splitter.finish() if chunk is None else splitter.feed(chunk)
        reasoning, content = reasoning + delta[0], content + delta[1]
    return reasoning, content


def every_split(text: str, inside: bool = False) -> tuple[str, str]:
    """The one (reasoning, content) every way of feeding ``text`` gives: whole, in two chunks cut
    at each position, and one character at a time. Fails on any difference."""
    whole = split_whole(text, inside)
    for at in range(len(text) + 1):
        assert split_in_chunks([text[:at], text[at:]], inside) == whole, f"cut at {at}"
    assert split_in_chunks(list(text), inside) == whole, "one character at a time"
    return whole


# --- what the client sees ---------------------------------------------------------------------

def test_qwen3_reasoning_then_a_tool_call():
    reasoning, content = every_split(QWEN3_TOOL_CALL)
    assert reasoning.startswith("Okay, the user is asking about the current temperature")
    assert reasoning.endswith("Let me use the temperatureTool now.\n")
    assert content == '<tool_call>\n{"name": "temperatureTool", "arguments": {}}\n</tool_call>'


def test_deepseek_output_that_starts_inside_the_block():
    reasoning, content = every_split(DEEPSEEK_INSIDE, inside=True)
    assert reasoning == DEEPSEEK_INSIDE.split("</think>")[0]
    assert content == "**1 + 1 = 2** because 2 is *defined* as the number that comes after 1."


def test_the_same_output_with_the_open_tag_written_by_the_model():
    assert every_split(DEEPSEEK_OPENING) == every_split(DEEPSEEK_INSIDE, inside=True)


def test_an_empty_block_leaves_only_its_inner_newline_and_the_answer():
    assert every_split(EMPTY_BLOCK) == ("\n", "Paris is the capital of France.")


def test_output_without_reasoning_is_all_content():
    assert every_split(NO_REASONING) == ("", NO_REASONING)
    assert every_split("\n\n" + NO_REASONING) == ("", "\n\n" + NO_REASONING)


def test_smollm3_reasoning():
    assert every_split(SMOLLM3) == ("The user wants 12 * 12. That is 144.\n", "12 * 12 = 144.")


def test_unicode_on_both_sides():
    reasoning, content = every_split(UNICODE)
    assert reasoning == "好的，用户问的是“你好”的意思。🤔 Ça dépend du contexte…\n"
    assert content == "“你好”的意思是 hello 👋。"


def test_output_cut_inside_the_reasoning_is_all_reasoning():
    cut = QWEN3_TOOL_CALL[: QWEN3_TOOL_CALL.index("</think>") + 5]  # ends "...now.\n</th"
    assert every_split(cut) == (cut[len("<think>\n"):], "")
    assert every_split(DEEPSEEK_INSIDE[:60], inside=True) == (DEEPSEEK_INSIDE[:60], "")
    assert every_split("<think>") == ("", "")
    assert every_split("", inside=True) == ("", "")


def test_a_think_tag_later_in_the_content_stays_content():
    text = "<think>\nHmm.\n</think>\n\nWrap it as <think>draft</think> then answer."
    assert every_split(text) == ("Hmm.\n", "Wrap it as <think>draft</think> then answer.")
    assert every_split("Use a <think> tag.") == ("", "Use a <think> tag.")
    assert every_split("Then </think> closes it.") == ("", "Then </think> closes it.")


def test_a_block_after_other_text_is_not_reasoning():
    text = "Sure.\n<think>\nplan\n</think>\n\nDone."
    assert every_split(text) == ("", text)


def test_whitespace_before_the_open_tag_is_dropped():
    assert every_split(" \n\t<think>\nx\n</think>\n\ny") == ("x\n", "y")


def test_reasoning_is_kept_as_written_apart_from_the_newline_after_the_tag():
    text = "<think>\n\n  two blank lines, spaces\n\n</think>answer  \n"
    assert every_split(text) == ("\n  two blank lines, spaces\n\n", "answer  \n")
    assert every_split("<think>no newline</think>ok") == ("no newline", "ok")


def test_an_open_tag_inside_the_reasoning_is_reasoning_text():
    text = "<think>\nI could write <think> here.\n</think>\n\nok"
    assert every_split(text) == ("I could write <think> here.\n", "ok")


def test_near_tags_are_text():
    assert every_split("<think>\na </thinking> b") == ("a </thinking> b", "")
    assert every_split("<thinking>x</thinking>") == ("", "<thinking>x</thinking>")
    assert every_split("< think>x") == ("", "< think>x")
    assert every_split("<thi") == ("", "<thi")
    assert every_split("  ") == ("", "  ")


def test_content_after_the_block_may_be_only_whitespace():
    assert every_split("<think>\nx\n</think>\n\n") == ("x\n", "")


def test_other_tags():
    tags = ReasoningTags("[THINK]", "[/THINK]")
    assert split_reasoning("[THINK]plan[/THINK]\n\nanswer", tags) == ("plan", "answer")


# --- streaming: what is held back, and the state a front-end reads --------------------------

def test_only_a_possible_partial_tag_is_held_back():
    splitter = ReasoningSplitter(TAGS)
    steps = [
        ("<th", ("", "")),
        ("ink>\nOkay, so</t", ("Okay, so", "")),
        ("hink", ("", "")),
        (">\n", ("", "")),
        ("\nThe answer", ("", "The answer")),
        (" is 4 </", ("", " is 4 </")),
    ]
    for chunk, expected in steps:
        assert splitter.feed(chunk) == expected, chunk
    assert splitter.finish() == ("", "")


def test_reasoning_and_content_stream_at_once():
    splitter = ReasoningSplitter(TAGS, inside=True)
    assert splitter.feed("Okay, the user") == ("Okay, the user", "")
    assert splitter.feed(" wants <b>") == (" wants <b>", "")
    assert splitter.feed("</think>\n\nHi") == ("", "Hi")
    assert splitter.feed(" there </think> <") == ("", " there </think> <")


def test_a_partial_close_tag_that_never_completes_is_reasoning():
    splitter = ReasoningSplitter(TAGS, inside=True)
    assert splitter.feed("so x </thi") == ("so x ", "")
    assert splitter.finish() == ("</thi", "")


def test_the_state_as_the_output_goes():
    splitter = ReasoningSplitter(TAGS)
    assert not splitter.in_reasoning and not splitter.reasoning_ended
    splitter.feed("\n<think>")
    assert splitter.in_reasoning and not splitter.reasoning_ended
    splitter.feed("\nhmm\n</think>")
    assert not splitter.in_reasoning and splitter.reasoning_ended
    splitter.feed("\n\nanswer")
    assert not splitter.in_reasoning and splitter.reasoning_ended

    inside = ReasoningSplitter(TAGS, inside=True)
    assert inside.in_reasoning and not inside.reasoning_ended

    plain = ReasoningSplitter(TAGS)
    plain.feed("Hello </think>")
    assert not plain.in_reasoning and not plain.reasoning_ended


def test_finish_once_then_no_more_text():
    splitter = ReasoningSplitter(TAGS)
    splitter.feed("<thi")
    assert splitter.finish() == ("", "<thi")
    assert splitter.finish() == ("", "")
    with pytest.raises(RuntimeError):
        splitter.feed("nk>")


def test_empty_tags_are_refused():
    with pytest.raises(ValueError):
        ReasoningSplitter(ReasoningTags(open="", close="</think>"))


PIECES = st.sampled_from([
    "<think>", "</think>", "<th", "ink>", "</", "think>", "<", ">", "\n", "\n\n", " ", "a",
    "Okay", "é", "好", "🤔", "</thinking>", "<think", "\t",
])


@settings(max_examples=300, derandomize=True, deadline=None)
@given(pieces=st.lists(PIECES, max_size=12), inside=st.booleans(), data=st.data())
def test_any_chunking_gives_the_same_split(pieces, inside, data):
    text = "".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    reasoning, content = split_whole(text, inside)
    assert split_in_chunks(chunks, inside) == (reasoning, content)
    # Nothing is invented; without a close tag the output is one part or the other, and only
    # the whitespace before the open tag, the tag and the newline after it are left out.
    assert reasoning in text and content in text
    if TAGS.close not in text:
        assert not (reasoning and content)
        assert text.endswith(reasoning + content)
        assert text[: len(text) - len(reasoning + content)].strip() in ("", TAGS.open)


# --- which models reason, and whether the prompt opened the block ----------------------------

@pytest.mark.parametrize("name", REASONING_TEMPLATES)
def test_reasoning_models_are_recognised_by_their_template(name):
    assert reasoning_tags((TEMPLATE_DIR / f"{name}.jinja").read_text()) == TAGS


@pytest.mark.parametrize("name", PLAIN_TEMPLATES)
def test_other_models_are_not(name):
    assert reasoning_tags((TEMPLATE_DIR / f"{name}.jinja").read_text()) is None


def test_the_demo_model_and_a_missing_template_are_not():
    config = json.loads((DEMO_MODEL / "tokenizer_config.json").read_text())
    assert reasoning_tags(config["chat_template"]) is None
    assert reasoning_tags(None) is None
    assert reasoning_tags("") is None


@pytest.fixture(scope="module")
def render():
    tokenizer = AutoTokenizer.from_pretrained(str(DEMO_MODEL))

    def render(name: str, messages: list[dict], **options) -> str:
        template = (TEMPLATE_DIR / f"{name}.jinja").read_text()
        return PromptBuilder(tokenizer, template).render_chat(messages, **options)

    return render


ASK = [{"role": "user", "content": "Why is 1 + 1 = 2?"}]
HISTORY = [*ASK, {"role": "assistant", "content": "<think>\nPeano.\n</think>\n\nBy definition."},
           {"role": "user", "content": "And 2 + 2?"}]


@pytest.mark.parametrize(("name", "messages", "options", "inside"), [
    ("deepseek-r1-distill-qwen", ASK, {}, True),
    ("deepseek-r1-distill-qwen", HISTORY, {}, True),
    ("qwq-32b", ASK, {}, True),
    ("qwq-32b", HISTORY, {}, True),
    ("qwen3", ASK, {}, False),
    ("qwen3", HISTORY, {}, False),
    ("qwen3", ASK, {"template_kwargs": {"enable_thinking": False}}, False),
    ("smollm3", ASK, {}, False),
    ("smollm3", ASK, {"template_kwargs": {"enable_thinking": False}}, False),
    ("qwen3", [*ASK, {"role": "assistant", "content": "<think>\nLet me see"}],
     {"add_generation_prompt": False, "continue_final_message": True}, True),
])
def test_whether_the_rendered_prompt_opened_the_block(render, name, messages, options, inside):
    assert starts_inside(render(name, messages, **options), TAGS) is inside


def test_starts_inside_on_plain_text():
    assert not starts_inside("", TAGS)
    assert not starts_inside("<|im_start|>assistant\n", TAGS)
    assert starts_inside("<｜Assistant｜><think>\n", TAGS)
    assert not starts_inside("<think>\n\n</think>\n\n", TAGS)


def test_a_deepseek_answer_end_to_end(render):
    prompt = render("deepseek-r1-distill-qwen", ASK)
    assert prompt.endswith("<｜Assistant｜><think>\n")
    splitter = ReasoningSplitter(TAGS, inside=starts_inside(prompt, TAGS))
    parts = [splitter.feed(DEEPSEEK_INSIDE[i:i + 7]) for i in range(0, len(DEEPSEEK_INSIDE), 7)]
    parts.append(splitter.finish())
    reasoning = "".join(part[0] for part in parts)
    content = "".join(part[1] for part in parts)
    assert reasoning.startswith("Okay, the user is asking why 1 + 1 equals 2.")
    assert "</think>" not in reasoning + content
    assert content.startswith("**1 + 1 = 2**")
