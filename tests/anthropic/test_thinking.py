"""Thinking blocks from a model that reasons: the demo model under a chat template that opens
``<think>`` (tests/functional/templates/think-opened.jinja), shown worked examples whose
reasoning goes back as earlier ``thinking`` blocks."""

from __future__ import annotations

import anthropic
import pytest

from tests.conftest import RunningServer, make_config
from tests.functional.test_reasoning import SHOTS, TEMPLATE
from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture

MESSAGES: list[dict] = []
for question, thought, answer in SHOTS:
    MESSAGES += [{"role": "user", "content": question},
                 {"role": "assistant", "content": [
                     {"type": "thinking", "thinking": thought, "signature": ""},
                     {"type": "text", "text": answer}]}]
MESSAGES.append({"role": "user", "content": "What is the capital of France?"})
ASK = {"model": NAME, "max_tokens": 60, "system": "Think first, then answer.",
       "messages": MESSAGES, "extra_body": {"temperature": 0}}


@pytest.fixture(scope="module")
def client(smollm2_repository):  # noqa: F811 - the fixture imported above
    with RunningServer(make_config(smollm2_repository, chat_template=TEMPLATE)) as server:
        yield anthropic.Anthropic(base_url=f"http://127.0.0.1:{server.port}", api_key="x",
                                  max_retries=0)


def test_reasoning_comes_as_a_thinking_block_before_the_text(client):
    answer = client.messages.create(**ASK)
    assert [b.type for b in answer.content] == ["thinking", "text"]
    thinking, text = answer.content
    assert "Paris" in thinking.thinking and "Paris" in text.text
    assert "<think>" not in text.text and "</think>" not in thinking.thinking


def test_streamed_thinking_deltas_assemble_to_the_same_blocks(client):
    whole = client.messages.create(**ASK)
    with client.messages.stream(**ASK) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    def blocks(message):
        return [(b.type, getattr(b, "thinking", None), getattr(b, "text", None))
                for b in message.content]

    assert blocks(final) == blocks(whole)
    assert kinds.index("text_delta") > max(i for i, k in enumerate(kinds) if k == "thinking_delta")
