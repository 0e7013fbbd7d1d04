"""Python literals in pythonic tool calls: where one ends, and what JSON value it is.

``LiteralReader`` finds the end of an argument value a character at a time (strings of every
quoting, escapes, nested brackets), so a call's parameters are known as soon as each is
written. ``literal_value`` turns the text into a JSON-able value by walking ``ast`` nodes:
nothing is ever evaluated. JSON's ``true``, ``false`` and ``null`` are accepted too.
"""

from __future__ import annotations

import ast
import math

MORE, END, ERROR = range(3)
_CLOSER = {")": "(", "]": "[", "}": "{"}
_NAMES = {"True": True, "False": False, "None": None, "true": True, "false": False, "null": None}


class LiteralReader:
    """Finds where one argument value ends: before a ``,`` or ``)`` outside any bracket."""

    def __init__(self) -> None:
        self._stack: list[str] = []
        self._quote = ""  # inside a string: its quote character
        self._triple = False
        self._opening = 0  # quotes seen at a string's start (to tell '' from ''')
        self._escape = False
        self._run = 0  # closing quotes in a row, in a triple-quoted string

    def push(self, ch: str) -> int:
        """MORE (consumed), END (the value ended before ``ch``) or ERROR."""
        if self._quote:
            return self._in_string(ch)
        if ch in "'\"":
            self._quote, self._opening, self._triple = ch, 1, False
            return MORE
        if ch in "([{":
            self._stack.append(ch)
        elif ch in _CLOSER:
            if not self._stack:
                return END if ch == ")" else ERROR
            if self._stack.pop() != _CLOSER[ch]:
                return ERROR
        elif ch == "," and not self._stack:
            return END
        return MORE

    def _in_string(self, ch: str) -> int:
        if self._opening:
            if ch == self._quote and self._opening < 3:
                self._opening += 1
                if self._opening == 3:
                    self._triple, self._opening, self._run = True, 0, 0
                return MORE
            if self._opening == 2:  # '' was an empty string: ch is outside it
                self._quote, self._opening = "", 0
                return self.push(ch)
            self._opening = 0
        if self._escape:
            self._escape = False
            self._run = 0
        elif ch == "\\":
            self._escape = True
            self._run = 0
        elif ch == self._quote:
            if not self._triple:
                self._quote = ""
            else:
                self._run += 1
                if self._run == 3:
                    self._quote = ""
        else:
            self._run = 0
            if ch == "\n" and not self._triple:
                return ERROR
        return MORE


class NotALiteral(ValueError):
    """The text is not a literal that JSON can carry."""


def literal_value(text: str) -> object:
    """The JSON-able value of a Python (or JSON) literal."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError) as error:
        raise NotALiteral(str(error)) from None
    return _value(tree.body)


def _value(node: ast.AST) -> object:
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return value
        raise NotALiteral(f"{value!r} has no JSON form")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _value(node.operand)
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            raise NotALiteral("a sign before something that is not a number")
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.List | ast.Tuple):
        return [_value(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        result = {}
        for key, item in zip(node.keys, node.values, strict=True):
            if key is None:
                raise NotALiteral("** in a dict")
            name = _value(key)
            if not isinstance(name, str | int | float | bool) and name is not None:
                raise NotALiteral("a dict key that JSON cannot carry")
            result[name] = _value(item)
        return result
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    raise NotALiteral(f"{type(node).__name__} is not a literal")
