"""Rank 0 tells the other ranks what each engine step does, over ``mx.distributed``.

MLX has no broadcast, so this is an all-sum in which every other rank contributes zeros: the
sum is rank 0's message, on every rank. Each message is JSON (never pickle: the launcher's
transport is not authenticated). Every step carries one, so the common case costs one small
collective: a fixed block of ``BLOCK_WORDS`` int32 words holding the length and the first
bytes; a longer message (a batch of new prompts) sends the rest in a second all-sum.
Collectives run on the calling thread's default stream (the model's, on the engine thread):
call ``exchange`` (or ``post`` then ``receive``) from the engine thread, in the same order on
every rank. ``post`` queues the block's all-sum without waiting for it, so an engine can queue
the next step behind it and read the message later (``receive``) without waiting for that step.
"""

from __future__ import annotations

import json
import time
from array import array
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from triton_mlx.distributed.watchdog import watchdog

BLOCK_WORDS = 1024  # 4 KiB: an empty step's message, or a few short prompts
_FIRST = (BLOCK_WORDS - 1) * 4  # payload bytes that fit beside the length


class Channel:
    """One leader's messages to its followers; ``seconds`` is the time spent exchanging."""

    def __init__(self, group: Any, leader: bool) -> None:
        self.group = group
        self.leader = leader
        self.seconds = 0.0
        self.messages = 0

    def exchange(self, message: Any = None) -> Any:
        """Rank 0 passes ``message`` (JSON-serialisable); every rank gets it back."""
        return self.receive(self.post(message))

    def post(self, message: Any = None) -> Posted:
        """Queue the first all-sum of an exchange (rank 0 passes ``message``)."""
        start = time.perf_counter()
        payload = json.dumps(message, separators=(",", ":")).encode() if self.leader else b""
        block = array("i", [len(payload)]) + _words(payload[:_FIRST], BLOCK_WORDS - 1)
        summed = self._sum(block)
        mx.async_eval(summed)
        self.seconds += time.perf_counter() - start
        return Posted(summed, payload, message)

    def receive(self, posted: Posted) -> Any:
        """The message of a posted exchange, on every rank (a long one's rest is sent now)."""
        start = time.perf_counter()
        summed = array("i", posted.summed.tolist())
        length = summed[0]
        data = summed[1:].tobytes()[: min(length, _FIRST)]
        if length > _FIRST:
            rest = posted.payload[_FIRST:]
            data += self._all_sum(_words(rest, -(-(length - _FIRST) // 4))).tobytes()
            data = data[:length]
        self.seconds += time.perf_counter() - start
        self.messages += 1
        watchdog.beat()
        return posted.message if self.leader else json.loads(data)

    def _all_sum(self, words: array) -> array:
        return array("i", self._sum(words).tolist())

    def _sum(self, words: array) -> mx.array:
        # On the calling thread's default stream, the model's: the exchange runs after the
        # step queued before it, in the same order on every rank. On another stream the two
        # could overlap, and their collectives interleave differently on each rank.
        return mx.distributed.all_sum(mx.array(words.tolist(), dtype=mx.int32),
                                      group=self.group)


@dataclass
class Posted:
    """An exchange whose first all-sum is queued: ``Channel.receive`` reads it."""

    summed: mx.array
    payload: bytes  # rank 0's JSON; empty on the others
    message: Any  # rank 0's message


def _words(data: bytes, count: int) -> array:
    """``data`` zero-padded to ``count`` int32 words."""
    padded = data + bytes(count * 4 - len(data))
    return array("i", padded)
