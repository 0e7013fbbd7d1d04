"""A request shaped as Claude Code (2.1.x, captured 2026-11) sends it: fields the Messages API
reference does not list but that real clients send must work, or fail naming themselves."""

from __future__ import annotations

import anthropic
import pytest

from tests.conftest import RunningServer, make_config
from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture

# Claude Code's own: a reminder as a system message between turns, adaptive thinking, the
# default effort, a context edit that keeps everything, a tool schema with a keyword the
# grammar engine does not implement (propertyNames), cache marks on system blocks.
CLAUDE_CODE = {
    "system": [{"type": "text", "text": "You are Claude Code."},
               {"type": "text", "text": "Be concise.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]},
                 {"role": "system", "content": "Reminder: available agent types..."}],
    "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {
        "type": "object", "properties": {
            "command": {"type": "string"},
            "env": {"type": "object", "propertyNames": {"pattern": "^[A-Z_]+$"},
                    "additionalProperties": {"type": "string"}}},
        "required": ["command"]}}],
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": '{"device_id":"abc","session_id":"9cf9"}'},
}


@pytest.fixture(scope="module")
def client(smollm2_repository):  # noqa: F811 - the fixture imported above
    """The demo model: Claude Code's prompts outgrow the tiny model's 512-token context."""
    with RunningServer(make_config(smollm2_repository)) as server:
        yield anthropic.Anthropic(base_url=f"http://127.0.0.1:{server.port}", api_key="x",
                                  max_retries=0)


def test_a_claude_code_request_is_served(client):
    fields = dict(CLAUDE_CODE)
    body = {k: fields.pop(k) for k in ("thinking", "output_config", "context_management")}
    answer = client.messages.create(model=NAME, max_tokens=8, extra_body=body, **fields)
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    streamed = client.messages.create(model=NAME, max_tokens=8, stream=True, extra_body=body,
                                      **fields)
    assert [e.type for e in streamed][-1] == "message_stop"


@pytest.mark.parametrize("changed, says", [
    ({"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
     "context_management"),
    ({"output_config": {"effort": "low"}}, "effort"),  # the tiny template has no effort
    ({"thinking": {"type": "adaptive", "budget_tokens": 2048}}, "thinking"),
])
def test_what_would_change_the_answer_is_refused_by_name(client, changed, says):
    fields = {**CLAUDE_CODE, **changed}
    body = {k: fields.pop(k) for k in ("thinking", "output_config", "context_management")}
    with pytest.raises(anthropic.BadRequestError, match=says):
        client.messages.create(model=NAME, max_tokens=8, extra_body=body, **fields)


def test_a_strict_tool_must_compile_whole(client):
    tool = {**CLAUDE_CODE["tools"][0], "strict": True}
    with pytest.raises(anthropic.BadRequestError, match="propertyNames"):
        client.messages.create(model=NAME, max_tokens=8, messages=CLAUDE_CODE["messages"][:1],
                               tools=[tool])
