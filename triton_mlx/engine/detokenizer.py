"""Incremental detokenization that never emits a broken UTF-8 sequence.

Byte-level BPE tokens can end in the middle of a multi-byte character. Decoding the whole
sequence each step would be quadratic, so we decode a short window: the text of
``ids[prefix:]`` minus the text of ``ids[prefix:read]``. The token before the new ones stays in
the window so tokenizers that drop a leading space when decoding alone keep it. A window whose
text ends in U+FFFD is incomplete and waits for the next token.
"""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Turns one sequence's token ids, one at a time, into text deltas."""

    def __init__(self, decoder: Decoder, skip_special_tokens: bool = True) -> None:
        self._decoder = decoder
        self._skip_special = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, token_id: int) -> str:
        """Append a token; return the newly completed text (may be empty)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Return whatever text is still held back, at the end of the sequence."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :]

    def _decode(self, ids: list[int]) -> str:
        return self._decoder.decode(ids, skip_special_tokens=self._skip_special) if ids else ""
