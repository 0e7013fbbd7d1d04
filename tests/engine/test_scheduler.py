"""Admission and the books of choice groups, without a model: what runs, what waits, what is
held, and what a leader leaves behind."""

from __future__ import annotations

import pytest

from triton_mlx.engine.kv_budget import CACHE_STEP, KVBudget
from triton_mlx.engine.prefix_cache import PrefixCache
from triton_mlx.engine.scheduler import Scheduler
from triton_mlx.engine.sequence import Sequence
from triton_mlx.engine.stream import GenerationStream
from triton_mlx.engine.types import GenerationRequest, QueueFullError, RequestTooLargeError

PROMPT = [1, 2, 3]
MAX_TOKENS = CACHE_STEP - len(PROMPT)  # one cache step per choice: 1 byte per token below


class FakePrefixCache(PrefixCache):
    """A prefix cache that holds ``nbytes`` bytes of nothing, to watch evictions."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(0)
        self.held = nbytes

    @property
    def nbytes(self) -> int:
        return self.held

    def shrink_to(self, max_bytes: int) -> None:
        self.held = min(self.held, max_bytes)


def scheduler(slots=4, max_queue=4, budget_steps=100, cached_bytes=0) -> Scheduler:
    return Scheduler("tiny", slots, max_queue, KVBudget(1, budget_steps * CACHE_STEP),
                     FakePrefixCache(cached_bytes))


def submit(books: Scheduler, n: int) -> list[GenerationStream]:
    request = GenerationRequest(PROMPT, MAX_TOKENS)
    books.place(request, n)
    streams = [GenerationStream(request, lambda stream: None) for _ in range(n)]
    books.enqueue(streams)
    return streams


def run(books: Scheduler, stream: GenerationStream) -> Sequence:
    sequence = Sequence(stream=stream)
    books.started(sequence)
    return sequence


def test_place_counts_what_fits_and_refuses_the_rest():
    books = scheduler(slots=2, max_queue=1, budget_steps=2)
    request = GenerationRequest(PROMPT, MAX_TOKENS)
    with pytest.raises(RequestTooLargeError, match="batch slots"):
        books.place(request, 3)
    with pytest.raises(RequestTooLargeError, match="MiB of KV cache"):
        books.place(GenerationRequest(PROMPT, 3 * CACHE_STEP), 1)
    books.place(request, 2)
    books.place(request, 1)
    with pytest.raises(QueueFullError, match="busy"):
        books.place(request, 1)
    assert books.occupancy() == (0, 3)


def test_groups_start_whole_in_order_while_slots_allow():
    books = scheduler(slots=4)
    first, second, third = submit(books, 2), submit(books, 3), submit(books, 1)
    [group] = books.admit()
    assert group.streams == first and books.budget.reserved_bytes == 2 * CACHE_STEP
    assert books.admit() == []  # the second does not fit; the third waits behind it
    for stream in first:
        books.end(stream)
    groups = books.admit()
    assert [g.streams for g in groups] == [second, third]
    assert books.budget.reserved_bytes == 4 * CACHE_STEP


def test_memory_holds_back_what_slots_would_allow_and_evicts_the_prefix_cache():
    books = scheduler(slots=4, budget_steps=3, cached_bytes=2 * CACHE_STEP)
    first, second = submit(books, 2), submit(books, 2)
    assert [g.streams for g in books.admit()] == [first]
    assert books.admit() == []  # two more would need 4 steps of 3
    assert books.prefix_cache.nbytes == CACHE_STEP  # evicted to what the first leaves free
    books.end(first[0])
    assert [g.streams for g in books.admit()] == [second]
    assert books.prefix_cache.nbytes == 0
    assert books.budget.reserved_bytes == books.budget.budget_bytes


def test_every_way_a_choice_ends_gives_back_what_it_held():
    books = scheduler(slots=4, max_queue=4)
    waiting = submit(books, 3)
    assert books.occupancy() == (0, 3)
    [group] = books.admit()
    leader = books.lead(group)
    run(books, leader)
    assert books.occupancy() == (1, 2)  # the followers wait to fork: counted as queued
    assert books.fork(leader) == waiting[1:]
    for stream in waiting[1:]:
        run(books, stream)
    assert books.occupancy() == (3, 0)
    queued = submit(books, 2)
    books.end(queued[0])  # cancelled while it waited: it held no slot
    for stream in [*waiting, queued[1], queued[0]]:  # twice for one: a no-op
        books.end(stream)
    assert books.idle and books.occupancy() == (0, 0)
    assert books.budget.reserved_bytes == 0
    assert books.admit() == []  # the emptied waiting group is dropped, not started


def test_a_leader_gone_before_the_fork_leaves_its_followers_to_restart():
    books = scheduler()
    streams = submit(books, 3)
    [group] = books.admit()
    run(books, books.lead(group))
    orphaned = books.end(streams[0])
    assert orphaned is group and orphaned.unstarted() == streams[1:]
    assert books.budget.reserved_bytes == 2 * CACHE_STEP  # they keep their slots and bytes
    new_leader = books.lead(orphaned)
    assert new_leader is streams[1]
    run(books, new_leader)
    assert books.fork(streams[2]) == []  # only the leader forks
    assert books.fork(new_leader) == [streams[2]]
    run(books, streams[2])
    assert books.end(new_leader) is None  # after the fork the others need it no more
    assert books.occupancy() == (1, 0)
