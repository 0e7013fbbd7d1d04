"""Reading a reply with the tokenizer's own transformers response template.

A tokenizer_config.json can carry a ``response_template`` (transformers >= 5): the model
author's declarative description of how a reply splits into ``thinking``, ``content`` and
``tool_calls``. Where one is present it is the authority on the model's output format, so
:class:`ResponseTemplateReader` runs transformers' streaming ``ResponseParser`` over the reply
and turns its region events into what a chat choice gives out: reasoning and content deltas,
and calls (``CallStart``, then ``CallArguments``) in ``serving.tool_calls``' terms.

How the parser's events become deltas:

* ``content`` and ``thinking``/``reasoning_content``/``reasoning`` stream as the parser makes
  their text known. The ``text`` parser strips each value, so leading whitespace is dropped
  and trailing whitespace is held until more text shows it was inside. A repeating field
  (``repeats``) is stripped per region and its regions joined with ``join`` (or nothing), as
  transformers does. A field that is not repeating but occurs twice (the implicit content
  region around tool calls) keeps all its text, stripped at its two ends, where transformers
  keeps only the last occurrence: streamed text cannot be taken back, and the last occurrence
  is often just the whitespace between two calls.
* A call becomes known when its region closes (that is when transformers parses it): its
  ``CallStart``, then its arguments (``json.dumps(..., ensure_ascii=False)``) in one fragment.
* A region transformers cannot parse (a truncated or broken call) does not end the stream: it
  is logged and its raw text is given back as content, as ``serving.tool_calls`` parsers do.
  ``ResponseParser`` raises from ``feed``/``finalize`` on such a region and stays stuck inside
  it, so the reader runs a subclass that turns that error into a ``region_malformed`` event.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from triton_mlx.serving.tool_calls import CallArguments, CallEvent, CallStart, ToolCall

log = logging.getLogger("triton_mlx.serving")


CONTENT_FIELDS = ("content",)
REASONING_FIELDS = ("thinking", "reasoning_content", "reasoning")
CALLS_FIELD = "tool_calls"
MALFORMED = "region_malformed"


def _template_of(tokenizer: Any) -> dict | None:
    template = getattr(tokenizer, "response_template", None)  # a TokenizerWrapper forwards it
    return template if isinstance(template, dict) and template else None


def has_response_template(tokenizer: Any) -> bool:
    """``tokenizer`` (an mlx-lm TokenizerWrapper or the HF tokenizer) carries a response
    template this transformers can load; a broken one is logged and counts as none."""
    template = _template_of(tokenizer)
    if template is None:
        return False
    try:
        from transformers.utils.chat_parsing.response_templates import load_response_template
    except ImportError:
        return False
    try:
        load_response_template(template)
    except Exception as exc:  # any fault in the template means it is not usable
        log.warning("ignoring the tokenizer's response_template: %s", exc)
        return False
    return True


@functools.cache
def _tolerant_parser() -> type:
    """transformers' ResponseParser, but a region that fails to parse becomes an event."""
    from transformers.utils.chat_parsing import ResponseParser

    class TolerantResponseParser(ResponseParser):
        def _close_current(self, events: list[dict]) -> None:
            field = self._current
            try:
                super()._close_current(events)
            except Exception as exc:  # the template's parsers raise anything
                error = str(exc).split("\n", 1)[0]
                events.append({"type": MALFORMED, "field": field, "error": error})
                self._reset_to_implicit()

    return TolerantResponseParser


def _load(template: dict) -> Any:
    """The loaded template with every field optional: a reply without a required field is
    served as it is rather than failing at its end."""
    from transformers.utils.chat_parsing.response_templates import load_response_template

    spec = load_response_template(template)
    fields = {n: dataclasses.replace(f, optional=True) for n, f in spec.fields.items()}
    return dataclasses.replace(spec, fields=fields)


def as_text(value: Any) -> str:
    """A parsed text field's value as text (a non-text parser's value as JSON)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def call_parts(call: Any) -> tuple[str, str] | None:
    """``(name, arguments JSON text)`` of one parsed call (``{type, function: {name,
    arguments}}``, or a bare ``{name, arguments}``); None when it is not a call."""
    function = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return None
    name, arguments = function.get("name"), function.get("arguments")
    if not isinstance(name, str) or not name:
        return None
    if arguments is None:
        return name, "{}"
    if isinstance(arguments, str):  # JSON text already; only an object is a call's arguments
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return name, json.dumps(arguments, ensure_ascii=False)


class _TextField:
    """One text field's deltas, stripped and joined as transformers builds its value."""

    def __init__(self, field: Any, has_default: bool) -> None:
        self.streams = field.content == "text"
        self.strip = field.content_args.get("strip", True)
        self.per_region = bool(field.repeats)
        self.separator = (field.join or "") if self.per_region else ""
        self.has_value = has_default
        self.started = False  # non-whitespace given out (in this region, when per region)
        self.held = ""  # trailing whitespace not known to be inside yet
        self.pending = ""  # the join separator not given out yet

    def open(self) -> None:
        if self.per_region:
            self.started, self.held = False, ""
            self.pending = self.separator if self.has_value else ""

    def push(self, text: str) -> str:
        if not self.streams:
            return ""
        if not self.strip:
            return self._out(text)
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        body = text.rstrip()
        if not body:
            self.held += text
            return ""
        out = self._out(self.held + body)
        self.held = text[len(body):]
        return out

    def close(self, value: Any) -> str:
        out = self._out(as_text(value)) if not self.streams else ""
        out, self.pending = out + self.pending, ""  # an empty region still adds the separator
        if self.per_region:
            self.held = ""
        self.has_value = True
        return out

    def _out(self, text: str) -> str:
        if not text:
            return ""
        text, self.pending = self.pending + text, ""
        return text


class ResponseTemplateReader:
    """Reads one choice's streamed reply with the tokenizer's response template."""

    def __init__(self, tokenizer: Any, prompt_text: str, tools: list[dict] | None,
                 new_id: Callable[[], str]) -> None:
        template = _template_of(tokenizer)
        if template is None:
            raise ValueError("the tokenizer has no response_template")
        spec = _load(template)
        self._parser = _tolerant_parser()(spec, prefix=prompt_text, tools=tools or None)
        self._new_id = new_id
        self._text: dict[str, tuple[str, _TextField]] = {}
        for name, field in spec.fields.items():
            kind = ("content" if name in CONTENT_FIELDS
                    else "reasoning" if name in REASONING_FIELDS else None)
            if kind is not None:
                has_default = spec.defaults.get(name) is not None
                self._text[name] = (kind, _TextField(field, has_default))
        self._raw: dict[str, str] = {}  # each open region's raw text
        self._calls: list[ToolCall] = []
        self._initial = list(self._parser.initial_events)
        self._broken = False
        self._finished = False

    @property
    def calls(self) -> list[ToolCall]:
        """The calls parsed so far, in order."""
        return list(self._calls)

    def feed(self, text: str) -> tuple[str, str, list[CallEvent]]:
        """The next chunk of the reply: the (reasoning, content, call events) it made known."""
        if self._finished:
            raise RuntimeError("the output already finished")
        events, self._initial = self._initial, []
        if self._broken:
            return "", text, []
        try:
            events += self._parser.feed(text)
        except Exception:  # never end a stream over the parser's fault
            log.exception("the response template parser failed; the rest is content")
            self._broken = True
            reasoning, content, calls = self._read(events)
            return reasoning, content + text, calls
        return self._read(events)

    def finish(self) -> tuple[str, str, list[CallEvent]]:
        """The reply ended: what the regions still open make known."""
        if self._finished:
            return "", "", []
        self._finished = True
        events, self._initial = self._initial, []
        if not self._broken:
            try:
                events += self._parser.finalize()[1]
            except Exception:  # never end a stream over the parser's fault
                log.exception("the response template parser failed at the end of the reply")
        return self._read(events)

    # -- events ---------------------------------------------------------------------------

    def _read(self, events: list[dict]) -> tuple[str, str, list[CallEvent]]:
        out = {"reasoning": "", "content": ""}
        calls: list[CallEvent] = []
        for event in events:
            kind, field = event.get("type"), event.get("field")
            if kind == "region_open":
                self._raw[field] = ""
            elif kind == "region_chunk":
                self._raw[field] = self._raw.get(field, "") + event["text"]
            text = self._text.get(field)
            if kind == MALFORMED:
                raw = self._raw.get(field, "")
                log.warning("%s region could not be parsed (%s): %r", field,
                            event.get("error", ""), raw[:200])
                if text is None or not text[1].streams:  # streamed text is out already
                    out["content"] += raw
            elif text is not None:
                out[text[0]] += self._text_event(kind, text[1], event)
            elif field == CALLS_FIELD and kind == "region_close":
                out["content"] += self._add_calls(event["value"], self._raw.get(field, ""),
                                                  calls)
            if kind in ("region_close", MALFORMED):
                self._raw.pop(field, None)
        return out["reasoning"], out["content"], calls

    @staticmethod
    def _text_event(kind: str, text: _TextField, event: dict) -> str:
        if kind == "region_open":
            text.open()
        elif kind == "region_chunk":
            return text.push(event["text"])
        elif kind == "region_close":
            return text.close(event["value"])
        return ""

    def _add_calls(self, value: Any, raw: str, events: list[CallEvent]) -> str:
        """Announce the calls of a closed region; a region that holds no call is given back
        as content (returned)."""
        items = value if isinstance(value, list) else [value]
        parts = [call_parts(item) for item in items]
        if any(p is None for p in parts):
            log.warning("tool_calls region holds no call: %r", raw[:200])
            return raw
        for name, arguments in parts:
            index = len(self._calls)
            call = ToolCall(self._new_id(), name, arguments)
            self._calls.append(call)
            events.append(CallStart(index, call.id, name))
            events.append(CallArguments(index, arguments))
        return ""
