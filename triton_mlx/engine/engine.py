"""One engine thread per model: continuous batching over mlx-lm's ``BatchGenerator``.

Threading model. Every MLX call for a model happens on its engine thread (MLX streams belong to
the thread that made them). The asyncio side talks to the thread through two channels only:
``submit``/``cancel`` put commands in a thread-safe inbox, and the thread hands each step's
outputs back with a single ``loop.call_soon_threadsafe`` per step, so the event loop wakes once
per step rather than once per token.

Scheduling. A request joins the running batch at the very next step. At most ``slots``
sequences run at once, and only while their KV caches fit the memory budget (``KVBudget``);
up to ``max_queue`` more wait in FIFO order; past that ``submit`` raises ``QueueFullError``.
Prompts are prefilled in chunks of ``prefill_step_size`` tokens between decode steps, so a long
prompt never stalls the running streams for long. A prompt starts from the longest cached
prefix (``PrefixCache``), and the ``n`` choices of one request prefill once: the siblings fork
the first one's prompt cache. A cancelled sequence leaves the batch at the next step.

Embeddings. Where the architecture allows (``decoder_embeddings``), ``embed`` queues a job
that the thread runs between two generation steps: mean-pooled last hidden states.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from triton_mlx.encoders.batching import (
    TOKEN_BUDGET,
    EmbedJob,
    JobQueue,
    Round,
    max_padding_share,
)
from triton_mlx.engine import decoder_embeddings
from triton_mlx.engine.detokenizer import Decoder, IncrementalDetokenizer
from triton_mlx.engine.kv_budget import KVBudget
from triton_mlx.engine.model_thread import ModelThread
from triton_mlx.engine.prefix_cache import PrefixCache
from triton_mlx.engine.sequence import Sequence
from triton_mlx.engine.stop_strings import StopStringMatcher
from triton_mlx.engine.types import (
    EngineError,
    EngineNotRunningError,
    EngineStats,
    GenerationOutput,
    GenerationRequest,
    QueueFullError,
    RequestTooLargeError,
)

logger = logging.getLogger("triton_mlx.engine")

_FINISHED = object()  # queue sentinel: the stream has delivered its last output
_HEADROOM = 0.1  # share of the memory budget kept free for activations and MLX's buffers
# Prompt tokens prefilled between two decode steps: the longest a running stream waits while
# a long prompt arrives. A CPU prefills a few hundred tokens per second, a GPU tens of
# thousands, so the CPU gets short chunks (fair) and the GPU long ones (efficient).
CPU_PREFILL_CHUNK = 128
GPU_PREFILL_CHUNK = 2048


class GenerationStream:
    """The asyncio side of one sequence: iterate it for outputs; ``cancel()`` to stop early.

    Iteration ends after the output that carries a ``finish_reason``. A failure inside the
    engine raises ``EngineError`` from the iterator.
    """

    def __init__(self, engine: Engine, request: GenerationRequest) -> None:
        self.request = request
        self._engine = engine
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._done = False

    def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[GenerationOutput]:
        while True:
            item = await self._queue.get()
            if item is _FINISHED:
                return
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if item.finish_reason is not None:
                self._done = True
            yield item

    def cancel(self) -> None:
        """Stop generating and free the slot; safe to call at any time, more than once."""
        if not self._done:
            self._done = True
            self._engine._command(("cancel", self))

    def _put(self, item: Any) -> None:
        self._queue.put_nowait(item)
        if isinstance(item, GenerationOutput) and item.finish_reason is not None:
            self._queue.put_nowait(_FINISHED)


LoadFn = Callable[[], tuple[Any, Any]]
"""Loads (model, tokenizer) on the engine thread; mlx-lm objects."""


class Engine(ModelThread):
    """Continuous-batching generation for one model, on a thread of its own."""

    thread_prefix = "engine"

    def __init__(
        self,
        load: LoadFn,
        *,
        name: str,
        slots: int,
        max_queue: int,
        prefill_step_size: int | None = None,
        warmup: bool = True,
        memory_budget_bytes: int | None = None,
        prefix_cache_bytes: int = 0,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        super().__init__(name)
        self.slots = slots
        self.max_queue = max_queue
        self._load = load
        self._prefill_step_size = prefill_step_size
        self._warmup = warmup
        self._memory_budget = memory_budget_bytes
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._admitted = 0  # sequences running or waiting, guarded by _lock
        self._running = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self.budget = KVBudget(bytes_per_token=1, budget_bytes=0)
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.dimensions = 0
        """Embedding width; 0 when the architecture cannot embed (see ``_probe_embeddings``)."""
        self.max_seq_length = 0
        self._embed_jobs = JobQueue(name, max_queue)
        self._embed_waiting: list[EmbedJob] = []
        self._embed_round: Round | None = None
        # Engine-thread state.
        self._model: Any = None
        self._tokenizer: Any = None
        self._generator: Any = None
        self._decoder: Decoder | None = None
        self._vocab_size = 0
        self._waiting: deque[list[GenerationStream]] = deque()
        self._by_uid: dict[int, Sequence] = {}
        self._by_stream: dict[GenerationStream, Sequence] = {}
        self._unforked = 0  # followers holding a slot while their leader prefills

    # ----- lifecycle (called from the asyncio side) -----

    def _request_stop(self) -> None:
        self._inbox.put(("stop", None))

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    # ----- requests (called from the asyncio side) -----

    def submit(self, request: GenerationRequest, n: int = 1) -> list[GenerationStream]:
        """Queue ``n`` sequences for ``request`` (one per choice); they start at the next step
        when slots and memory allow. Choices after the first get seeds ``seed + i``."""
        if not self._accepting:
            raise EngineNotRunningError(f"model {self.name!r} is not accepting requests")
        if n > self.slots:
            raise RequestTooLargeError(
                f"n={n} choices exceed model {self.name!r}'s {self.slots} batch slots"
            )
        tokens = len(request.prompt_tokens) + request.max_tokens
        need = self.budget.need(tokens) * n
        if not self.budget.can_ever_fit(need):
            raise RequestTooLargeError(
                f"this request needs {need / 2**20:.0f} MiB of KV cache ({n} x {tokens} tokens "
                f"at {self.budget.bytes_per_token} bytes per token) but model {self.name!r} "
                f"has {self.budget.budget_bytes / 2**20:.0f} MiB for KV caches; lower "
                f"max_tokens or shorten the prompt"
            )
        with self._lock:
            if self._admitted + n > self.slots + self.max_queue:
                raise QueueFullError(
                    f"model {self.name!r} is busy: {self.slots} requests running and "
                    f"{self.max_queue} waiting; retry later"
                )
            self._admitted += n
        self._loop = asyncio.get_running_loop()
        streams = [GenerationStream(self, _choice(request, i)) for i in range(n)]
        self._command(("submit", streams))
        return streams

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids for embedding (the tokenizer's own special tokens), cut to the context;
        one batched call to the Rust tokenizer (2x faster than one call per text)."""
        hf_tokenizer = getattr(self._tokenizer, "_tokenizer", self._tokenizer)
        return [self.truncate(ids) for ids in hf_tokenizer(texts)["input_ids"]]

    def truncate(self, ids: list[int]) -> list[int]:
        return ids[: self.max_seq_length]

    async def embed(self, token_id_lists: list[list[int]]) -> Any:
        """(len(inputs), dimensions) float32 vectors: mean-pooled, L2-normalised last hidden
        states, computed on the engine thread between generation steps."""
        if not self._accepting:
            raise EngineNotRunningError(f"model {self.name!r} is not accepting requests")
        if not self.dimensions:
            raise EngineError(f"model {self.name!r} cannot compute embeddings")
        job = self._embed_jobs.new_job(token_id_lists)
        self._command(("embed", job))
        return await job.future

    def stats(self) -> EngineStats:
        with self._lock:
            admitted = self._admitted
        running = self._running
        return EngineStats(
            running=running,
            queued=max(admitted - running, 0),
            slots=self.slots,
            max_queue=self.max_queue,
            generated_tokens=self.generated_tokens,
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=self.prefix_cache.cached_tokens,
            prefix_cache_bytes=self.prefix_cache.nbytes,
            kv_reserved_bytes=self.budget.reserved_bytes,
            kv_budget_bytes=self.budget.budget_bytes,
        )

    def _command(self, command: tuple[str, Any]) -> None:
        self._inbox.put(command)

    # ----- engine thread: setup -----

    def _load_model(self) -> None:
        """Load and warm the model (on this thread)."""
        import mlx.core as mx

        self._model, self._tokenizer = self._load()
        self._stream = mx.default_stream(mx.default_device())
        on_gpu = mx.default_device() == mx.gpu
        if self._prefill_step_size is None:
            self._prefill_step_size = GPU_PREFILL_CHUNK if on_gpu else CPU_PREFILL_CHUNK
        self._vocab_size = _vocab_size(self._model)
        self._decoder = _fast_decoder(self._tokenizer)
        self._generator = self._new_generator()
        if self._warmup:
            self._warm_up(on_gpu=on_gpu)
        self._probe_embeddings()
        self.budget = self._measure_budget()

    def _shutdown(self) -> None:
        """Fail what runs or waits (jobs that came after the stop too); release the model."""
        unloaded = EngineNotRunningError(f"model {self.name!r} was unloaded")
        self._fail_all(unloaded)
        if self._embed_round is not None:
            self._embed_round.fail(unloaded)
        for job in self._embed_waiting:
            job.fail(unloaded)
        while True:  # jobs that came after the stop command
            try:
                kind, payload = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "embed":
                payload.fail(unloaded)
            elif kind == "submit":
                for stream in payload:
                    self._finish_failed(stream, unloaded)
        self._generator = None
        self._model = None

    def _new_generator(self) -> Any:
        from mlx_lm.generate import BatchGenerator

        eos = sorted(self._tokenizer.eos_token_ids)
        return BatchGenerator(
            self._model,
            stop_tokens=[[t] for t in eos],
            completion_batch_size=self.slots,
            prefill_batch_size=self.slots,
            prefill_step_size=self._prefill_step_size,
            stream=self._stream,
        )

    def _warm_up(self, on_gpu: bool) -> None:
        """Run short generations so no request pays kernel compilation or first allocations.

        On a GPU every decode batch size the scheduler can reach (1..slots) is compiled once;
        on a CPU there is nothing to compile and batch 1 is enough."""
        prompt = self._tokenizer.encode("Hello")[-4:] or [0]
        for size in range(1, (self.slots if on_gpu else 1) + 1):
            uids = set(self._generator.insert([prompt] * size, max_tokens=[2] * size))
            while uids:
                _, responses = self._generator.next()
                uids -= {r.uid for r in responses if r.finish_reason}

    def _probe_embeddings(self) -> None:
        """Find whether this architecture exposes its hidden states, and their width."""
        import mlx.core as mx

        try:
            with mx.stream(self._stream):
                self.dimensions = decoder_embeddings.hidden_size(self._model)
        except Exception as exc:
            logger.info("model %s cannot compute embeddings: %s", self.name, exc)
            return
        args = getattr(self._model, "args", None)
        self.max_seq_length = int(getattr(args, "max_position_embeddings", 0) or TOKEN_BUDGET)
        self._embedding_forward = decoder_embeddings.mean_pooled(
            self._model, chunk=min(self._prefill_step_size or 512, 512)
        )

    def _measure_budget(self) -> KVBudget:
        """KV bytes per token (measured on a one-token cache) and the bytes left for KV caches
        once the weights are in memory."""
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        with mx.stream(self._stream):
            cache = make_prompt_cache(self._model)
            self._model(mx.array([[0]]), cache=cache)
            mx.eval([c.state for c in cache])
        allocated = max(getattr(getattr(cache[0], "keys", None), "shape", (1, 1, 1))[2], 1)
        bytes_per_token = max(sum(c.nbytes for c in cache) // allocated, 1)
        del cache
        total = self._memory_budget or _default_memory_budget()
        free = int(total * (1 - _HEADROOM)) - mx.get_active_memory()
        logger.info(
            "model %s: %.0f MiB for KV caches (%d bytes per token, budget %.0f MiB)",
            self.name, free / 2**20, bytes_per_token, total / 2**20,
        )
        return KVBudget(bytes_per_token=bytes_per_token, budget_bytes=free)

    # ----- engine thread: the loop -----

    def _serve(self) -> None:
        while True:
            idle = not self._by_uid and not self._waiting and self._embed_round is None
            if not self._drain_inbox(block=idle):
                return
            if self._embed_waiting or self._embed_round is not None:
                self._embed_step()
            self._admit()
            if not self._by_uid:
                continue
            try:
                prompt_responses, responses = self._generator.next()
                for response in prompt_responses:
                    if response.end_of_prompt:
                        self._fork_followers(response.uid)
                outputs = self._handle_step(responses)
            except Exception:
                logger.exception("engine step failed for model %s", self.name)
                self._fail_all(EngineError("generation failed inside the engine"))
                self._generator = self._new_generator()
                continue
            self._deliver([o for o in outputs if o is not None])

    def _drain_inbox(self, block: bool) -> bool:
        """Apply pending commands; returns False when the engine must stop."""
        while True:
            try:
                kind, payload = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if kind == "stop":
                return False
            if kind == "submit":
                self._waiting.append(payload)
            elif kind == "embed":
                self._embed_waiting.append(payload)
            elif kind == "cancel":
                self._cancel(payload)

    def _embed_step(self) -> None:
        """One batch of the embedding round in progress (a new round takes every job waiting):
        one forward pass of at most a prefill chunk of padded tokens between two generation
        steps, so running streams wait no longer than for a prefill chunk. A failure fails
        that round's jobs only."""
        import mlx.core as mx

        if self._embed_round is None:
            jobs, self._embed_waiting = self._embed_waiting, []
            self._embed_round = Round(
                jobs, dimensions=self.dimensions,
                token_budget=self._prefill_step_size or TOKEN_BUDGET,
                padding_share=max_padding_share(mx.default_device() == mx.gpu),
                on_pass=self._count_embedded,
            )
        batches = self._embed_round
        try:
            with mx.stream(self._stream):
                batches.step(self._embedding_forward)
        except Exception as exc:
            logger.exception("embedding failed for model %s", self.name)
            batches.fail(EngineError(f"embedding failed inside the engine: {exc}"))
            self._embed_round = None
            return
        if batches.done:
            self._embed_round = None

    def _count_embedded(self, tokens: int) -> None:
        self.prompt_tokens += tokens

    def _admit(self) -> None:
        """Start waiting requests, oldest first, while slots and KV memory allow."""
        while self._waiting:
            group = self._waiting[0]
            if len(self._by_uid) + self._unforked + len(group) > self.slots:
                return
            request = group[0].request
            need = self.budget.need(len(request.prompt_tokens) + request.max_tokens)
            if not self._make_room(need * len(group)):
                return
            self._waiting.popleft()
            self._start_group(group, need)

    def _make_room(self, need: int) -> bool:
        """Whether ``need`` bytes fit beside the running sequences, evicting prefix-cache
        entries if that is what it takes."""
        spare = self.budget.free_bytes() - need
        if spare < 0:
            return False
        if self.prefix_cache.nbytes > spare:
            self.prefix_cache.shrink_to(spare)
        return True

    def _start_group(self, group: list[GenerationStream], need: int) -> None:
        leader, followers = group[0], group[1:]
        try:
            sequence = self._insert(leader, need)
        except Exception:
            logger.exception("could not start request",
                             extra={"request_id": leader.request.request_id})
            for stream in group:
                self._finish_failed(stream, EngineError("could not start generation"))
            return
        self.budget.reserve(need * len(followers))
        sequence.followers = followers
        self._unforked += len(followers)

    def _insert(
        self,
        stream: GenerationStream,
        need: int,
        cache: list[Any] | None = None,
        cached: int = 0,
    ) -> Sequence:
        """Add one sequence to the batch, starting from ``cache`` (holding the first ``cached``
        prompt tokens) or from the prefix cache's longest match."""
        from triton_mlx.engine import sampling
        from triton_mlx.engine.fault_trap import FaultTrap

        request = stream.request
        prompt = list(request.prompt_tokens)
        if cache is None:
            cache, cached = self.prefix_cache.fetch(prompt)
        trap = FaultTrap()
        (uid,) = self._generator.insert(
            [prompt[cached:]],
            max_tokens=[request.max_tokens],
            caches=[cache] if cache is not None else None,
            all_tokens=[prompt[:cached]],
            samplers=[trap.sampler(sampling.make_sampler(request.sampling, self._vocab_size))],
            logits_processors=[trap.processors(
                sampling.make_logits_processors(request.sampling, len(prompt)))],
        )
        sequence = Sequence(
            stream=stream,
            detokenizer=IncrementalDetokenizer(self._decoder),
            stop=StopStringMatcher(request.stop),
            uid=uid,
            cached_tokens=cached,
            reserved_bytes=need,
            trap=trap,
        )
        self._by_uid[uid] = sequence
        self._by_stream[stream] = sequence
        self._running = len(self._by_uid)
        self.budget.reserve(need)
        self.prompt_tokens += len(prompt) - cached  # tokens actually prefilled
        return sequence

    def _fork_followers(self, uid: int) -> None:
        """The leader of an ``n`` > 1 request has its prompt in cache: its siblings start
        from a copy instead of prefilling the same prompt again."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        leader = self._by_uid.get(uid)
        if leader is None or not leader.followers:
            return
        followers, leader.followers = leader.followers, []
        self._unforked -= len(followers)
        cache, tokens = self._generator.extract_cache([uid])[uid]
        forkable = can_trim_prompt_cache(cache) and len(tokens) > 1
        if forkable:
            trim_prompt_cache(cache, 1)  # each sibling samples its own first token
        for stream in followers:
            self.budget.release(leader.reserved_bytes)  # _insert reserves it again
            if forkable:
                sequence = self._insert(stream, leader.reserved_bytes, copy.deepcopy(cache),
                                        len(tokens) - 1)
            else:
                sequence = self._insert(stream, leader.reserved_bytes)
            sequence.cached_tokens = leader.cached_tokens

    def _handle(self, response: Any) -> tuple[GenerationStream, GenerationOutput] | None:
        sequence = self._by_uid.get(response.uid)
        if sequence is None:  # cancelled while this step ran
            return None
        self.generated_tokens += 1
        output, stopped = sequence.advance(
            response.token, response.logprobs, response.finish_reason
        )
        if response.finish_reason is not None:
            self.prefix_cache.store(response.all_tokens, response.prompt_cache)
            self._release(sequence)
        elif stopped:
            self._remove(sequence)
        return None if output is None else (sequence.stream, output)

    def _handle_step(
        self, responses: list[Any]
    ) -> list[tuple[GenerationStream, GenerationOutput] | None]:
        """The outputs of one step. A sequence whose own code failed (its sampler or logits
        processors during the step, its detokenizer or stop strings here) fails alone; the
        rest of the batch goes on."""
        for sequence in [s for s in self._by_uid.values() if s.trap and s.trap.error]:
            self._fail_sequence(sequence, sequence.trap.error)
        outputs = []
        for response in responses:
            sequence = self._by_uid.get(response.uid)
            try:
                outputs.append(self._handle(response))
            except Exception as exc:
                if sequence is None:
                    raise
                self._fail_sequence(sequence, exc)
        return outputs

    def _fail_sequence(self, sequence: Sequence, exc: BaseException) -> None:
        """Fail one sequence (and the siblings waiting to fork it) after its own code raised;
        the traceback goes to the log, the client gets a generic engine error."""
        logger.error("generation failed for one request of model %s; the others go on",
                     self.name, exc_info=exc,
                     extra={"request_id": sequence.request.request_id})
        error = EngineError("generation failed inside the engine")
        followers, sequence.followers = sequence.followers, []
        if sequence.uid in self._by_uid:
            self._generator.remove([sequence.uid])
            self._release(sequence)
        if followers:
            self._unforked -= len(followers)
            self.budget.release(sequence.reserved_bytes * len(followers))
            for stream in followers:
                self._finish_failed(stream, error)
        self._deliver_error(sequence.stream, error)

    def _remove(self, sequence: Sequence) -> None:
        """Take a running sequence out of the batch, keeping its cache for later prompts."""
        keep = self.prefix_cache.enabled
        caches = self._generator.remove([sequence.uid], return_prompt_caches=keep)
        if keep and sequence.uid in caches:
            cache, tokens = caches[sequence.uid]
            self.prefix_cache.store(tokens, cache)
        self._release(sequence)

    def _cancel(self, stream: GenerationStream) -> None:
        sequence = self._by_stream.get(stream)
        if sequence is not None:
            followers, sequence.followers = sequence.followers, []
            self._remove(sequence)
            if followers:  # the siblings lose their leader before the fork: start afresh
                self._unforked -= len(followers)
                self.budget.release(sequence.reserved_bytes * len(followers))
                self._start_group(followers, sequence.reserved_bytes)
            return
        for leader in self._by_uid.values():
            if stream in leader.followers:
                leader.followers.remove(stream)
                self._unforked -= 1
                self.budget.release(leader.reserved_bytes)
                self._free_admission()
                return
        for group in self._waiting:
            if stream in group:
                group.remove(stream)
                if not group:
                    self._waiting.remove(group)
                self._free_admission()
                return

    def _release(self, sequence: Sequence) -> None:
        del self._by_uid[sequence.uid]
        del self._by_stream[sequence.stream]
        self._running = len(self._by_uid)
        self.budget.release(sequence.reserved_bytes)
        self._free_admission()

    def _free_admission(self, count: int = 1) -> None:
        with self._lock:
            self._admitted -= count

    def _fail_all(self, error: EngineError) -> None:
        for sequence in list(self._by_uid.values()):
            followers, sequence.followers = sequence.followers, []
            self._unforked -= len(followers)
            self.budget.release(sequence.reserved_bytes * len(followers))
            self._release(sequence)
            self._deliver_error(sequence.stream, error)
            for stream in followers:
                self._finish_failed(stream, error)
        while self._waiting:
            for stream in self._waiting.popleft():
                self._finish_failed(stream, error)

    def _finish_failed(self, stream: GenerationStream, error: EngineError) -> None:
        self._free_admission()
        self._deliver_error(stream, error)

    def _deliver(self, batch: list[tuple[GenerationStream, GenerationOutput]]) -> None:
        if batch:
            self._call_in_loop(_dispatch, batch)

    def _deliver_error(self, stream: GenerationStream, error: EngineError) -> None:
        self._call_in_loop(stream._put, error)

    def _call_in_loop(self, fn: Callable[..., None], arg: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:  # the loop has closed: nobody is left to read the output
            pass


def _choice(request: GenerationRequest, index: int) -> GenerationRequest:
    """The request for choice ``index``: with a seed, each choice draws its own numbers."""
    if index == 0 or request.sampling.seed is None:
        return request
    sampling = dataclasses.replace(request.sampling, seed=request.sampling.seed + index)
    return dataclasses.replace(request, sampling=sampling)


def _default_memory_budget() -> int:
    """Without ``--max-memory-gb``: the GPU's recommended working set, else half the RAM."""
    import os

    import mlx.core as mx

    info = mx.device_info()
    for key in ("max_recommended_working_set_size", "memory_size", "total_memory"):
        if info.get(key):
            return int(info[key])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _vocab_size(model: Any) -> int:
    args = getattr(model, "args", None)
    return int(getattr(args, "vocab_size", 0) or model.model.embed_tokens.weight.shape[0])


def _fast_decoder(tokenizer: Any) -> Decoder:
    """The Rust tokenizer behind mlx-lm's wrapper when there is one: it decodes fastest."""
    hf_tokenizer = getattr(tokenizer, "_tokenizer", tokenizer)
    return getattr(hf_tokenizer, "backend_tokenizer", hf_tokenizer)


def _dispatch(batch: list[tuple[GenerationStream, GenerationOutput]]) -> None:
    for stream, output in batch:
        stream._put(output)
