"""A chat request end to end in no protocol's shape: its prompt and grammar, then its output
split into answer, reasoning and tool calls.

:func:`plan_chat` renders the prompt (tools through the model's template or the default tool
format, ``serving.tools``), and builds the one grammar the request needs (``tool_grammar``).
:func:`chat_deltas` reads a running :class:`Generation` and yields :class:`ChatDelta` items:
each choice's text goes through its reasoning splitter (reasoning models), then its tool-call
parser (when calls are expected), so front-ends receive content, reasoning and call events
already apart, streamed, and never see markup.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from triton_mlx.engine.types import TokenLogprob
from triton_mlx.repository.served import ChatModel
from triton_mlx.serving.errors import invalid
from triton_mlx.serving.generation import ChoiceDelta, Generation
from triton_mlx.serving.prompts import PromptError
from triton_mlx.serving.reasoning import ReasoningSplitter, ReasoningTags, starts_inside
from triton_mlx.serving.response_template import ResponseTemplateReader, has_response_template
from triton_mlx.serving.tool_calls import (
    CallEvent,
    TextDelta,
    ToolCall,
    ToolCallParser,
    make_parser,
    new_call_id,
)
from triton_mlx.serving.tool_grammar import ToolGrammarError, chat_grammar
from triton_mlx.serving.tools import ToolRequest, chat_for_template, template_reads_tools

logger = logging.getLogger("triton_mlx.serving")



@dataclass
class ChatPlan:
    """What a chat request sends to the engine and how its output is read back."""

    tokens: list[int]
    grammar: str | None
    tools: ToolRequest | None = None
    tool_format: str | None = None
    reasoning: ReasoningTags | None = None
    reasoning_open: bool = False
    """The prompt opened the reasoning block: the output starts inside it."""
    keep_special_tokens: bool = False
    """The call markers are special tokens, which the text must keep for the parser."""
    prompt_text: str = ""
    response_template: Any = None
    """The tokenizer, when its transformers response template reads the replies."""

    @property
    def parses_calls(self) -> bool:
        return self.tools is not None and self.tools.calls_expected

    def reader(self) -> ChoiceReader:
        """A fresh reader for one choice's output."""
        return ChoiceReader(self)


def plan_chat(
    model: ChatModel,
    messages: list[dict[str, Any]],
    *,
    tools: ToolRequest | None = None,
    text_grammar: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> ChatPlan:
    """Render ``messages`` for ``model`` and build the request's grammar. A model that cannot
    serve the tools (no parser for its template's format) is a 400 naming ``tools``."""
    prompts = model.prompts
    source = prompts.template_source(with_tools=tools is not None)
    native = template_reads_tools(source)
    tool_format = model.tool_format
    calls = tools is not None and tools.calls_expected
    # the model author's own description of its replies, where its tokenizer carries one
    template_reader = (calls and tool_format != "default"
                       and has_response_template(prompts.tokenizer))
    if calls and tool_format is None:
        if not template_reader:
            raise invalid(f"tools: model '{model.name}' has a chat template with its own tool "
                          "format that this server cannot parse; set tool_call_format in its "
                          "triton_mlx.json (or --tool-call-format)", "tools")
        if tools is not None and tools.choice in ("required", "function"):
            raise invalid(f"tool_choice: model '{model.name}' has a call format the grammar "
                          "cannot hold it to; use auto", "tool_choice")
    if tool_format == "default":
        native = False
    for key in template_kwargs or {}:
        if source is None or key not in source:
            param = "reasoning_effort" if key == "reasoning_effort" else "chat_template_kwargs"
            raise invalid(f"{param}: the chat template of model '{model.name}' does not use "
                          f"{key!r}", param)
    chat = chat_for_template(messages, tools, native=native)
    try:
        text = prompts.render_chat(chat.messages, tools=chat.tools,
                                   template_kwargs=template_kwargs)
    except PromptError as exc:
        raise invalid(str(exc), "messages") from None
    tags = model.reasoning
    inside = tags is not None and starts_inside(text, tags)
    thinking = tags is not None and (inside or not text.rstrip().endswith(tags.close))
    markers = _markers(tool_format)
    special = [m for m in markers if prompts.special_token_id(m) is not None]
    try:
        grammar = chat_grammar(
            tools=tools if tool_format is not None else None, tool_format=tool_format,
            text_grammar=text_grammar,
            reasoning=(tags.open, tags.close, inside) if thinking and tags else None,
            token_id=prompts.special_token_id,
            native_mistral_args=bool(source and "[ARGS]" in source),
        )
    except ToolGrammarError as exc:
        raise invalid(str(exc), "response_format") from None
    return ChatPlan(
        tokens=prompts.encode_rendered(text), grammar=grammar, tools=tools,
        tool_format=tool_format, reasoning=tags if thinking else None, reasoning_open=inside,
        keep_special_tokens=(bool(special) and calls) or template_reader, prompt_text=text,
        response_template=prompts.tokenizer if template_reader else None,
    )


def _markers(tool_format: str | None) -> tuple[str, ...]:
    return {"mistral": ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"),
            "llama3_json": ("<|python_tag|>",),
            "hermes": ("<tool_call>", "</tool_call>"),
            "qwen3_coder": ("<tool_call>", "</tool_call>")}.get(tool_format or "", ())


@dataclass(frozen=True)
class ChatDelta:
    """What one engine step added to one choice of a chat: answer text, reasoning text, and
    tool-call events (a call's start with its id and name, then argument fragments)."""

    index: int
    content: str = ""
    reasoning: str = ""
    calls: tuple[CallEvent, ...] = ()
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    stop_string: str | None = None
    """The stop string that ended the choice, if one did."""


@dataclass
class ChoiceReader:
    """Splits one choice's text: reasoning first (reasoning models), then answer and calls."""

    plan: ChatPlan
    splitter: ReasoningSplitter | None = None
    parser: ToolCallParser | None = None
    template: ResponseTemplateReader | None = None
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        plan = self.plan
        if plan.response_template is not None and plan.tools is not None:
            self.template = ResponseTemplateReader(
                plan.response_template, plan.prompt_text,
                [t.definition() for t in plan.tools.tools], new_call_id)
            return
        if plan.reasoning is not None:
            self.splitter = ReasoningSplitter(plan.reasoning, inside=plan.reasoning_open)
        if plan.parses_calls and plan.tools is not None and plan.tool_format is not None:
            fmt = "hermes" if plan.tool_format == "default" else plan.tool_format
            self.parser = make_parser(fmt, [t.definition() for t in plan.tools.tools])

    @property
    def calls(self) -> list[ToolCall]:
        if self.template is not None:
            return self.template.calls
        return self.parser.calls if self.parser is not None else []

    def read(self, delta: ChoiceDelta) -> ChatDelta:
        if self.template is not None:
            return self._read_with_template(delta)
        reasoning, answer = (self.splitter.feed(delta.text) if self.splitter is not None
                             else ("", delta.text))
        events = self.parser.feed(answer) if self.parser is not None and answer else []
        if delta.finish_reason is not None:
            if self.splitter is not None:
                more_reasoning, more_answer = self.splitter.finish()
                reasoning += more_reasoning
                if self.parser is not None and more_answer:
                    events += self.parser.feed(more_answer)
                elif more_answer:
                    answer += more_answer
            if self.parser is not None:
                events += self.parser.finish()  # it logs what it could not parse
        if self.parser is not None:
            answer = "".join(e.text for e in events if isinstance(e, TextDelta))
        calls = tuple(e for e in events if not isinstance(e, TextDelta))
        return self._delta(delta, answer, reasoning, calls)

    def _read_with_template(self, delta: ChoiceDelta) -> ChatDelta:
        assert self.template is not None
        reasoning, answer, calls = self.template.feed(delta.text)
        if delta.finish_reason is not None:
            more_reasoning, more_answer, more_calls = self.template.finish()
            reasoning, answer = reasoning + more_reasoning, answer + more_answer
            calls = calls + more_calls
        return self._delta(delta, answer, reasoning, tuple(calls))

    def _delta(self, delta: ChoiceDelta, answer: str, reasoning: str,
               calls: tuple[CallEvent, ...]) -> ChatDelta:
        self.content.append(answer)
        self.reasoning.append(reasoning)
        finish = delta.finish_reason
        if finish == "stop" and self.calls:
            finish = "tool_calls"
        return ChatDelta(delta.index, answer, reasoning, calls, finish, delta.logprobs,
                         delta.stop_string)


async def chat_deltas(generation: Generation, readers: list[ChoiceReader]
                      ) -> AsyncIterator[ChatDelta]:
    """``generation``'s deltas, each choice read by its own reader."""
    async for delta in generation.deltas():
        yield readers[delta.index].read(delta)
