"""One engine per rank, all stepping the same batch: rank 0 decides, the others follow.

Every rank runs the same ``Engine`` code on its shard of the model, so each rank's scheduler,
prefix cache and batch evolve identically as long as every rank applies the same commands in the
same order: then each step's forward pass (whose collectives join the ranks' shards) and its
sampling (the same logits and the same random keys on every rank: rank 0 seeds every sampled
request that has no seed) agree without further talk.
So once per turn of the engine loop, rank 0 sends the commands it took from its inbox (new
requests with their tokens and parameters, cancellations, stop) over a ``Channel``, and every
rank, rank 0 included, applies that list (while the batch runs, at the next turn: see
``_drain_inbox``). Stop strings, disconnects and drains all reach rank 0's inbox as
cancellations or a stop, and so reach every rank.

What must be equal on every rank is made equal at load: the KV budget (the smallest of the
ranks', at the largest bytes per token) decides admission the same way everywhere, and the
prefix cache counts its bytes in the same units (pipeline ranks hold different numbers of
layers), so every rank keeps and evicts the same entries. Streams on
the other ranks have no reader: their tokens go nowhere (the engine has no event loop there).

Before loading, rank 0's engine thread tells the others which model to load (``announce``);
a follower process waits for that in ``follower.serve``.

The invariant: every rank makes the same MLX calls in the same order, evaluations included.
MLX's backends pair collectives by the order in which each rank runs them, and how a graph is
evaluated (in one call, or in parts) decides that order; an evaluation on one rank only (timing
a step's collectives on rank 0, say) paired them wrongly, with wrong tokens and no error.
``CollectiveClock`` times them on the same sampled steps on every rank instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import secrets
from typing import Any

import mlx.core as mx

from triton_mlx.distributed.channel import Channel, Posted
from triton_mlx.distributed.collective_clock import CollectiveClock
from triton_mlx.distributed.watchdog import watchdog
from triton_mlx.distributed.world import World, explain_load_failure
from triton_mlx.encoders.batching import EmbedJob
from triton_mlx.engine.engine import Engine
from triton_mlx.engine.kv_budget import KVBudget
from triton_mlx.engine.stream import GenerationStream
from triton_mlx.engine.types import (
    EngineError,
    EngineStats,
    GenerationRequest,
    SamplingParams,
)

logger = logging.getLogger("triton_mlx.distributed")


class RankLoadError(EngineError):
    """Another rank could not load its shard."""


_split: str | None = None  # the model split across the ranks now: one at a time


def claim(name: str) -> bool:
    """Whether ``name`` is to be split across the ranks: yes when no other model is (every
    step's collectives must come from one engine thread per rank, in the same order)."""
    global _split
    if _split == name:
        raise EngineError(f"model {name!r} is split across ranks; reloading it while it "
                          "runs is not supported yet: unload it first")
    if _split is not None:
        return False
    _split = name
    return True


def _release(name: str) -> None:
    global _split
    if _split == name:
        _split = None


class LockstepEngine(Engine):
    """An ``Engine`` whose every turn applies rank 0's commands, on every rank."""

    def __init__(self, load: Any, *, world: World, announce: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("fold_first", False)  # its check would be a collective pass
        kwargs.setdefault("lone_compiled", False)  # the model's own step does the ranks' part
        super().__init__(load, **kwargs)
        self.world = world
        self.channel = Channel(world.group, world.leader)
        self._announce = announce  # rank 0: what the followers are told to load
        self._ids: dict[GenerationStream, int] = {}  # rank 0: stream -> wire id
        self._streams: dict[int, GenerationStream] = {}  # every rank: wire id -> stream
        self._next_id = 0
        self._no_reader: asyncio.AbstractEventLoop | None = None  # followers' embed jobs
        self._broken = False  # a collective failed
        self._posted: tuple[Posted, list[tuple[str, Any]]] | None = None  # read next turn
        self.clock = CollectiveClock()  # the model's collectives, one step in 64

    # ----- load -----

    @property
    def layout(self) -> dict[str, Any]:
        return self.world.layout()

    @property
    def answering(self) -> bool:
        """Not once a collective failed, nor when the other ranks have been quiet for half the
        rank timeout: readiness fails (``/v1/health/ready``, ``/v2/health/ready``) before the
        process ends (``watchdog``)."""
        return not self._broken and watchdog.quiet_for() < watchdog.timeout / 2

    def _serve(self) -> None:
        """A failure that escapes the loop is a collective's (a step's own failures fail its
        batch and the loop goes on): the ranks can no longer work together."""
        try:
            super()._serve()
        except Exception as exc:
            self._broken = True
            logger.exception("model %s: the ranks lost each other", self.name)
            self._fail_all(EngineError("a rank serving this model was lost"))
            watchdog.abandon(f"the ranks serving model {self.name!r} lost each other ({exc})")
            raise

    def stats(self) -> EngineStats:
        return dataclasses.replace(super().stats(), ranks=self.world.size,
                                   exchange_seconds=self.channel.seconds,
                                   exchanges=self.channel.messages,
                                   collective_seconds=self.clock.collective_seconds,
                                   collective_steps=self.clock.sampled_steps,
                                   sampled_step_seconds=self.clock.step_seconds)

    def _load_model(self) -> None:
        if self.world.leader:
            self.channel.exchange(self._announce)
        failed = 0
        try:
            super()._load_model()
        except Exception as exc:
            failed = 1
            _release(self.name)
            explained = explain_load_failure(self.world.kind, exc)
            if explained:
                raise explained from exc
            raise
        finally:
            failures = self._count(failed)  # every rank reaches this, loaded or not
            if failures and not failed:
                _release(self.name)
                raise RankLoadError(f"{failures} other rank(s) could not load model "
                                    f"{self.name!r}; see their logs")
        self._agree_on_budget()
        watchdog.arm()

    def _count(self, value: int) -> int:
        summed = mx.distributed.all_sum(mx.array([value], dtype=mx.int32),
                                        group=self.world.group)
        return int(summed.item())

    def _agree_on_budget(self) -> None:
        """Admission must decide alike on every rank: the smallest budget, the largest
        bytes per token (pipeline ranks hold different numbers of layers)."""
        mine = self.budget
        both = mx.array([[-(mine.budget_bytes // 2**20), mine.bytes_per_token]], dtype=mx.int64)
        gathered = mx.distributed.all_gather(both, group=self.world.group)
        smallest = -int(gathered[:, 0].max().item()) * 2**20
        largest = int(gathered[:, 1].max().item())
        self.budget = KVBudget(bytes_per_token=largest, budget_bytes=smallest)
        self.prefix_cache.count_as(largest, mine.bytes_per_token)  # the same entries kept

    def _shutdown(self) -> None:
        super()._shutdown()
        watchdog.disarm()
        _release(self.name)

    # ----- each turn -----

    def _step(self) -> None:
        """One step, its collectives timed on the steps the clock samples (every rank's)."""
        with self.clock.step():
            super()._step()

    def _drain_inbox(self, block: bool) -> bool:
        """Rank 0: take the inbox's commands and send them; every rank: apply them.

        While the batch runs, a turn's exchange is posted (queued ahead of the step this turn
        dispatches) and read, and its commands applied, at the start of the next turn: by
        then the step before it is done, so reading waits for no step, and the engine builds
        each step's graph while the GPU runs the previous one, as in one process. Commands
        thus take effect one step later. Idle (``block``), rank 0 waits for work and the
        exchange is read at once. Every rank takes the same branches: they depend only on
        state and commands every rank shares."""
        if self._posted is not None:
            commands = self._read(self._posted)
            self._posted = None
            if not self._apply_all(commands):
                return False
            block = block and not commands
        if block:
            return self._apply_all(self._read(self._post(block=True)))
        self._posted = self._post(block=False)
        return True

    def _post(self, block: bool) -> tuple[Posted, list[tuple[str, Any]]]:
        if not self.world.leader:
            return self.channel.post(), []
        commands = self._take_inbox(block)
        wire = [self._to_wire(kind, payload) for kind, payload in commands]
        return self.channel.post(wire), commands

    def _read(self, posted: tuple[Posted, list[tuple[str, Any]]]) -> list[tuple[str, Any]]:
        message = self.channel.receive(posted[0])
        if self.world.leader:
            return posted[1]
        return [self._from_wire(wire) for wire in message]

    def _apply_all(self, commands: list[tuple[str, Any]]) -> bool:
        for kind, payload in commands:
            if not self._apply(kind, payload):
                return False
        return True

    def _take_inbox(self, block: bool) -> list[tuple[str, Any]]:
        commands = []
        while True:
            try:  # idle, wake now and then: the other ranks' watchdogs hear from rank 0
                kind, payload = self._inbox.get(block=block, timeout=watchdog.heartbeat)
            except queue.Empty:
                return commands
            block = False
            if kind == "cancel" and payload not in self._ids:
                continue  # it has ended already, on every rank
            commands.append((kind, payload))
            if kind == "stop":
                return commands

    def _to_wire(self, kind: str, payload: Any) -> dict[str, Any]:
        if kind == "submit":
            _seed_for_every_rank(payload)
            first = self._register(payload)
            return {"kind": kind, "id": first, "n": len(payload),
                    "request": request_to_wire(payload[0].request)}
        if kind == "cancel":
            return {"kind": kind, "id": self._ids[payload]}
        if kind == "embed":
            return {"kind": kind, "inputs": payload.inputs}
        return {"kind": kind}  # stop

    def _from_wire(self, message: dict[str, Any]) -> tuple[str, Any]:
        kind = message["kind"]
        if kind == "submit":
            request = request_from_wire(message["request"])
            n = message["n"]
            self._scheduler.place(request, n)
            streams = self._new_streams(request, n)
            if self._register(streams) != message["id"]:
                raise EngineError("ranks disagree on the requests they hold")
            return kind, streams
        if kind == "cancel":  # None: it ended between rank 0 taking the cancel and now
            return kind, self._streams.get(message["id"])
        if kind == "embed":  # the same forward passes; nobody reads these vectors
            if self._no_reader is None:
                self._no_reader = asyncio.new_event_loop()  # never run
            return kind, EmbedJob(inputs=message["inputs"], loop=self._no_reader,
                                  future=self._no_reader.create_future())
        return kind, None

    def _register(self, streams: list[GenerationStream]) -> int:
        first = self._next_id
        for stream in streams:
            self._ids[stream] = self._next_id
            self._streams[self._next_id] = stream
            self._next_id += 1
        return first

    def _end(self, stream: GenerationStream, error: EngineError | None = None) -> None:
        super()._end(stream, error)
        if self._scheduler.group_of(stream) is None:
            ident = self._ids.pop(stream, None)
            if ident is not None:
                self._streams.pop(ident, None)


def _seed_for_every_rank(streams: list[GenerationStream]) -> None:
    """A sampled request without a seed would draw from each rank's own MLX random state
    (seeded from the clock, per process) and the ranks would sample different tokens: give it
    a seed, the same on every rank (choice ``i`` gets ``seed + i``, as with a seed of its own)."""
    request = streams[0].request
    if request.sampling.greedy or request.sampling.seed is not None:
        return
    sampling = dataclasses.replace(request.sampling, seed=secrets.randbits(63))
    seeded = dataclasses.replace(request, sampling=sampling)
    for i, stream in enumerate(streams):
        stream.request = seeded.for_choice(i)


def request_to_wire(request: GenerationRequest) -> dict[str, Any]:
    wire = dataclasses.asdict(request)
    wire["sampling"]["logit_bias"] = [[t, v] for t, v in request.sampling.logit_bias.items()]
    return wire


def request_from_wire(wire: dict[str, Any]) -> GenerationRequest:
    sampling = dict(wire["sampling"])
    sampling["logit_bias"] = {int(t): float(v) for t, v in sampling["logit_bias"]}
    fields = dict(wire)
    fields["sampling"] = SamplingParams(**sampling)
    fields["stop"] = tuple(fields["stop"])
    return GenerationRequest(**fields)
