"""Which tool-call format a model's chat template asks for.

The template is what teaches the model its call format (in its instructions, and in how it
renders earlier calls), so its marker strings name the format, as in mlx-lm and llama.cpp. A
template that never reads the ``tools`` variable cannot show the model any tools: the server
then adds its own default tool prompt, whose calls use the hermes format ("default"). A
template that renders tools in a format not recognized here gives None: better no tool parsing
than a parser that silently drops the model's calls.
"""

from __future__ import annotations

import re

_JINJA_CODE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.S)
_TOOLS = re.compile(r"(?<![\w.])tools(?!\w)")

# Checked in order: the first whose pattern is in the template wins.
_MARKERS: tuple[tuple[str, re.Pattern], ...] = (
    ("qwen3_coder", re.compile(r"<function=")),
    ("mistral", re.compile(r"\[TOOL_CALLS\]")),
    ("hermes", re.compile(r"<tool_call>")),
    ("pythonic", re.compile(r"\[func_name1\(|<\|python_start\|>|python list")),
    ("llama3_json", re.compile(r"<\|python_tag\|>|\"parameters\":")),
)


def uses_tools(chat_template: str) -> bool:
    """The template's code (not its text or comments) reads a variable named ``tools``."""
    for code in _JINJA_CODE.findall(chat_template):
        if _TOOLS.search(_STRING.sub("''", code)):
            return True
    return False


def detect_format(chat_template: str | None) -> str | None:
    """The tool-call format ``chat_template`` asks for, "default" when it shows no tools, or
    None when it renders tools in a format not recognized."""
    if not chat_template or not uses_tools(chat_template):
        return "default"
    for name, pattern in _MARKERS:
        if pattern.search(chat_template):
            return name
    return None
