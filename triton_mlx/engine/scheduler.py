"""Admission and the books of the batch: which requests run, which wait, and what they hold.

The ``n`` choices of one request form a ``ChoiceGroup``. Groups wait in FIFO order and are
admitted whole, oldest first, while batch slots and the KV memory budget (``KVBudget``) allow,
evicting prefix-cache entries when that is what it takes; past ``slots + max_queue`` choices a
submission is refused. Once admitted, a group holds one slot and ``need`` KV bytes for every
choice that has not ended, whether it runs or waits to fork, and gives each back when that
choice ends, however it ends (``end``). Each count changes in one place, so no caller has to
keep counters in step by hand.

The choices of a group prefill the prompt once: one of them (the leader) runs first, and the
others wait until its prompt is in cache, then fork the cache. A leader that ends before that
leaves its followers orphaned: the engine starts them afresh (one leads again) or, when the
leader failed, fails them.

Every operation costs in proportion to what changes, not to the size of the batch or queue.
Engine thread only, except ``place`` and ``occupancy``, which any thread may call.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from triton_mlx.engine.kv_budget import KVBudget
from triton_mlx.engine.prefix_cache import PrefixCache
from triton_mlx.engine.sequence import Sequence
from triton_mlx.engine.stream import GenerationStream
from triton_mlx.engine.types import GenerationRequest, QueueFullError, RequestTooLargeError


@dataclass(eq=False)
class ChoiceGroup:
    """The choices of one request that have not ended yet, and what they hold."""

    streams: list[GenerationStream]
    """Every choice still alive, in submission order."""
    admitted: bool = False
    need: int = 0
    """KV bytes reserved per choice once admitted: prompt plus ``max_tokens``."""
    leader: GenerationStream | None = None
    """The choice whose prompt cache the unstarted ones will fork; None once forked."""
    sequences: dict[GenerationStream, Sequence] = field(default_factory=dict)
    """The choices in the batch."""

    def unstarted(self) -> list[GenerationStream]:
        """Choices not in the batch: all of a waiting group; a leader's followers."""
        return [stream for stream in self.streams if stream not in self.sequences]


class Scheduler:
    """Waiting and admitted choice groups, with the slots and KV bytes they hold."""

    def __init__(self, name: str, slots: int, max_queue: int, budget: KVBudget,
                 prefix_cache: PrefixCache) -> None:
        self.name = name
        self.slots = slots
        self.max_queue = max_queue
        self.budget = budget
        self.prefix_cache = prefix_cache
        self._lock = threading.Lock()
        self._placed = 0  # choices submitted and not ended; any thread, under _lock
        self._running = 0  # choices in the batch
        self._slots_held = 0  # by admitted groups
        self._waiting: deque[ChoiceGroup] = deque()
        self._groups: dict[GenerationStream, ChoiceGroup] = {}

    # ----- any thread -----

    def place(self, request: GenerationRequest, n: int) -> None:
        """Count ``request``'s ``n`` choices in, or refuse them: ``RequestTooLargeError`` if
        they could never run (more choices than slots, KV caches larger than the whole
        budget), ``QueueFullError`` if ``slots + max_queue`` choices are in already."""
        if n > self.slots:
            raise RequestTooLargeError(
                f"n={n} choices exceed model {self.name!r}'s {self.slots} batch slots")
        budget = self.budget
        tokens = len(request.prompt_tokens) + request.max_tokens
        need = budget.need(tokens) * n
        if not budget.can_ever_fit(need):
            raise RequestTooLargeError(
                f"this request needs {need / 2**20:.0f} MiB of KV cache ({n} x {tokens} tokens "
                f"at {budget.bytes_per_token} bytes per token) but model {self.name!r} "
                f"has {budget.budget_bytes / 2**20:.0f} MiB for KV caches; lower "
                f"max_tokens or shorten the prompt")
        with self._lock:
            if self._placed + n > self.slots + self.max_queue:
                raise QueueFullError(
                    f"model {self.name!r} is busy: {self.slots} requests running and "
                    f"{self.max_queue} waiting; retry later")
            self._placed += n

    def occupancy(self) -> tuple[int, int]:
        """(choices in the batch, choices waiting: queued or waiting to fork)."""
        running = self._running
        with self._lock:
            placed = self._placed
        return running, max(placed - running, 0)

    # ----- engine thread -----

    @property
    def idle(self) -> bool:
        """No choice waits or runs, and nothing is held for one."""
        return not self._groups and self._slots_held == 0 and self._running == 0

    def enqueue(self, streams: list[GenerationStream]) -> None:
        """Queue one request's choices (already counted in by ``place``)."""
        group = ChoiceGroup(list(streams))
        self._waiting.append(group)
        for stream in streams:
            self._groups[stream] = group

    def admit(self) -> list[ChoiceGroup]:
        """The waiting groups that start now, oldest first, while slots and KV memory allow,
        each with its slots and bytes reserved; the caller starts their leaders."""
        admitted = []
        while self._waiting:
            group = self._waiting[0]
            if not group.streams:  # every choice was cancelled while it waited
                self._waiting.popleft()
                continue
            size = len(group.streams)
            if self._slots_held + size > self.slots:
                break
            request = group.streams[0].request
            need = self.budget.need(len(request.prompt_tokens) + request.max_tokens)
            if not self._make_room(need * size):
                break
            self._waiting.popleft()
            group.admitted, group.need = True, need
            self._slots_held += size
            self.budget.reserve(need * size)
            admitted.append(group)
        return admitted

    def _make_room(self, need: int) -> bool:
        """Whether ``need`` bytes fit beside the admitted groups, evicting prefix-cache
        entries if that is what it takes."""
        spare = self.budget.free_bytes() - need
        if spare < 0:
            return False
        if self.prefix_cache.nbytes > spare:
            self.prefix_cache.shrink_to(spare)
        return True

    def lead(self, group: ChoiceGroup) -> GenerationStream:
        """Make the first unstarted choice the one that prefills for the others."""
        group.leader = group.unstarted()[0]
        return group.leader

    def group_of(self, stream: GenerationStream) -> ChoiceGroup | None:
        """``stream``'s group while the choice has not ended."""
        return self._groups.get(stream)

    def started(self, sequence: Sequence) -> None:
        """``sequence``'s choice is in the batch now."""
        self._groups[sequence.stream].sequences[sequence.stream] = sequence
        self._running += 1

    def fork(self, stream: GenerationStream) -> list[GenerationStream]:
        """``stream``'s prompt is in its cache: the choices that fork that cache now (none
        unless it leads a group)."""
        group = self._groups.get(stream)
        if group is None or group.leader is not stream:
            return []
        group.leader = None
        return group.unstarted()

    def end(self, stream: GenerationStream) -> ChoiceGroup | None:
        """``stream``'s choice is over (finished, stopped, cancelled or failed), and out of
        the batch: give back its place, its slot and its bytes.

        Returns its group when the choice led it and choices are left waiting to fork a
        prompt cache that will not come; the caller starts them afresh or fails them."""
        group = self._groups.pop(stream, None)
        if group is None:
            return None
        with self._lock:
            self._placed -= 1
        if group.sequences.pop(stream, None) is not None:
            self._running -= 1
        if group.admitted:
            self._slots_held -= 1
            self.budget.release(group.need)
        group.streams.remove(stream)
        if group.leader is stream:
            group.leader = None
            return group if group.unstarted() else None
        return None

    def streams(self) -> Iterator[GenerationStream]:
        """Every choice not ended yet, running, forking or waiting (to fail them all)."""
        return iter(list(self._groups))
