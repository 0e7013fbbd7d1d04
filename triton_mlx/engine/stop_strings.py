"""Stop-string matching on decoded text.

Stop strings are matched on text, not on token ids, so a stop string is found however the model
happens to tokenize it, including when it is split across several tokens. Text that might be the
beginning of a stop string is held back until it is known not to be, so a client never sees a
partial stop string.
"""

from __future__ import annotations


class StopStringMatcher:
    """Feed decoded text in pieces; get back the part that is safe to emit."""

    def __init__(self, stop: tuple[str, ...] | list[str]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._pending = ""
        self.matched: str | None = None
        """The stop string that ended the text, once one has."""

    def feed(self, text: str, may_stop: bool = True) -> tuple[str, bool]:
        """Add ``text``; return (text safe to emit, whether a stop string was found).

        On a match the text before the stop string is returned and everything from the stop
        string on is dropped. With ``may_stop`` False (before a request's ``min_tokens``) stop
        strings do not count: the text goes out whole but for a possible start of a stop
        string, which waits, since that stop string may complete once stopping is allowed.
        Only a stop string that ends in ``text`` counts, never one that ended before.
        """
        if not self._stop:
            return text, False
        buffer = self._pending + text
        if may_stop:
            cut = self._first_match(buffer, new_from=len(self._pending))
            if cut >= 0:
                self._pending = ""
                return buffer[:cut], True
        held = self._longest_partial_suffix(buffer)
        self._pending = buffer[len(buffer) - held :]
        return buffer[: len(buffer) - held], False

    def flush(self) -> str:
        """Return the held-back text once the sequence has ended without a match."""
        text, self._pending = self._pending, ""
        return text

    def _first_match(self, buffer: str, new_from: int) -> int:
        """Where the earliest stop string ending at or after ``buffer[new_from]`` starts; -1
        for none. (The held text never holds a whole stop string while stopping is allowed,
        so this only matters for one that completed while it was not.)"""
        found = [(buffer.find(s, max(new_from - len(s) + 1, 0)), s) for s in self._stop]
        cut, stop = min(((i, s) for i, s in found if i >= 0), default=(-1, None),
                        key=lambda match: match[0])
        self.matched = stop
        return cut

    def _longest_partial_suffix(self, buffer: str) -> int:
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
