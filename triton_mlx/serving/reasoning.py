"""Reasoning splitting: a reasoning model's ``<think>...</think>`` block, apart from its answer.

Reasoning models (Qwen3, QwQ, DeepSeek-R1 distills, SmolLM3...) write their reasoning in a
``<think>...</think>`` block before the answer. Clients expect the reasoning in
``message.reasoning_content`` (``delta.reasoning_content`` when streaming) and only the answer
in ``content``; raw tags in ``content`` are what users of other MLX servers complain about.

Which models reason is read from the chat template (:func:`reasoning_tags`). Some templates
open the block in the prompt (DeepSeek-R1 distills and QwQ end their generation prompt with
``<think>\\n``), so the output starts inside it (:func:`starts_inside`).

:class:`ReasoningSplitter` splits the output as it streams, with these rules:

* Only a block at the very start of the output counts (whitespace may precede the open tag
  and is dropped). Output that starts with anything else is all content, tags included; a
  ``<think>`` later in the answer stays content too.
* The tags appear in neither part. One ``"\\n"`` right after the open tag is dropped (the
  newline every family writes there, including the one a prompt ending in ``<think>\\n`` has
  already written: the reasoning never starts with it); the rest of the reasoning is returned
  as written. The whitespace right after the close tag (the ``"\\n\\n"`` models write) is
  dropped from the start of the content.
* Only what could be the start of a tag is held back at the end of a chunk (and, before the
  block has opened, the whitespace before it); everything else comes out at once. Any way of
  cutting the output into chunks gives the same reasoning and content.
* Output that ends inside the block (``max_tokens``) is all reasoning, with no content.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReasoningSplitter", "ReasoningTags", "reasoning_tags", "split_reasoning",
           "starts_inside"]


@dataclass(frozen=True)
class ReasoningTags:
    """The strings that open and close a reasoning block."""

    open: str = "<think>"
    close: str = "</think>"


THINK_TAGS = ReasoningTags()


def reasoning_tags(chat_template: str | None) -> ReasoningTags | None:
    """The reasoning tags a model writes, read from its chat template; None for other models.

    A template that mentions ``<think>`` or ``</think>`` belongs to a reasoning model: Qwen3 and
    QwQ strip the block from earlier turns, DeepSeek-R1 distills open it in the generation
    prompt, SmolLM3 describes it in its system prompt and writes an empty one to turn it off.
    """
    if not chat_template:
        return None
    if THINK_TAGS.open in chat_template or THINK_TAGS.close in chat_template:
        return THINK_TAGS
    return None


def starts_inside(prompt_text: str, tags: ReasoningTags) -> bool:
    """Whether the rendered prompt leaves the reasoning block open for the output to continue.

    True when the prompt's last open tag comes after its last close tag (DeepSeek-R1 distills
    and QwQ end with ``<think>\\n``; a continued final message may have opened it too). Qwen3
    with ``enable_thinking=false`` renders a closed, empty block: not inside.
    """
    last_open = prompt_text.rfind(tags.open)
    return last_open >= 0 and last_open > prompt_text.rfind(tags.close)


# Where the splitter is in the output.
_BEFORE = "before"  # nothing but whitespace and maybe part of the open tag yet
_REASONING = "reasoning"  # inside the block
_AFTER_CLOSE = "after-close"  # the block closed; dropping the whitespace that follows it
_CONTENT = "content"  # everything from here on is content


class ReasoningSplitter:
    """Splits one output's text, chunk by chunk, into reasoning and content deltas.

    One splitter per generated sequence: :meth:`feed` each text delta as it comes, then
    :meth:`finish` once to flush what was held back (a partial tag that never completed).
    """

    def __init__(self, tags: ReasoningTags, inside: bool = False) -> None:
        if not tags.open or not tags.close:
            raise ValueError("reasoning tags must not be empty")
        self._tags = tags
        self._state = _REASONING if inside else _BEFORE
        self._held = ""  # text not yet given out: a possible partial tag (and leading spaces)
        self._at_reasoning_start = inside  # the next reasoning character follows the open tag
        self._closed = False
        self._finished = False

    @property
    def in_reasoning(self) -> bool:
        """Whether the output is inside the reasoning block now."""
        return self._state == _REASONING

    @property
    def reasoning_ended(self) -> bool:
        """Whether the close tag has been seen."""
        return self._closed

    def feed(self, text: str) -> tuple[str, str]:
        """The (reasoning, content) this chunk of output adds; either may be empty."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        reasoning: list[str] = []
        content: list[str] = []
        text = self._held + text
        self._held = ""
        while text:
            if self._state == _BEFORE:
                text = self._before(text, content)
            elif self._state == _REASONING:
                text = self._reasoning(text, reasoning)
            elif self._state == _AFTER_CLOSE:
                text = text.lstrip()
                if text:
                    self._state = _CONTENT
            else:
                content.append(text)
                text = ""
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """The (reasoning, content) still held back when the output ends."""
        if self._finished:
            return "", ""
        self._finished = True
        held, self._held = self._held, ""
        if self._state == _REASONING:
            return self._drop_start_newline(held), ""
        return "", held  # a partial open tag (or spaces) that never became a block is content

    def _before(self, text: str, content: list[str]) -> str:
        """Decide, from the output's start, whether it opens a reasoning block."""
        rest = text.lstrip()
        if rest.startswith(self._tags.open):
            self._state = _REASONING
            self._at_reasoning_start = True
            return rest[len(self._tags.open):]
        if self._tags.open.startswith(rest):  # only spaces, or part of the open tag: wait
            self._held = text
            return ""
        self._state = _CONTENT
        content.append(text)
        return ""

    def _reasoning(self, text: str, reasoning: list[str]) -> str:
        """Give out reasoning up to the close tag; hold back a partial close tag at the end."""
        close = self._tags.close
        at = text.find(close)
        if at >= 0:
            reasoning.append(self._drop_start_newline(text[:at]))
            self._state = _AFTER_CLOSE
            self._closed = True
            return text[at + len(close):]
        keep = _partial_suffix(text, close)
        shown = text[: len(text) - keep]
        self._held = text[len(text) - keep:]
        reasoning.append(self._drop_start_newline(shown))
        return ""

    def _drop_start_newline(self, text: str) -> str:
        """Drop the one newline that follows the open tag, once the reasoning's start is seen."""
        if not text or not self._at_reasoning_start:
            return text
        self._at_reasoning_start = False
        return text[1:] if text.startswith("\n") else text


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that is a proper start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def split_reasoning(text: str, tags: ReasoningTags, inside: bool = False) -> tuple[str, str]:
    """A whole output's (reasoning, content), for answers that are not streamed."""
    splitter = ReasoningSplitter(tags, inside)
    reasoning, content = splitter.feed(text)
    more_reasoning, more_content = splitter.finish()
    return reasoning + more_reasoning, content + more_content
