"""One engine thread per model: continuous batching over mlx-lm's ``BatchGenerator``.

Threading model. Every MLX call for a model happens on its engine thread (MLX streams belong to
the thread that made them), and the thread does little else. The asyncio side talks to the
thread through two channels only: ``submit``/``cancel``/``embed`` put commands in a thread-safe
inbox, and the thread hands each step's raw tokens back through an outbox (``LoopOutbox``):
one wake-up of the event loop per step at most, none while an earlier one is still pending, so
an event loop that lags behind takes several steps' tokens in one turn instead of paying a
wake-up for each. There each ``GenerationStream`` (``stream``) turns its tokens into text,
applies its stop strings and formats its logprobs (``text_output``), while this thread
dispatches the next step. Front-ends hold those streams, which know nothing of this module.

The loop. Each turn applies the inbox's commands, runs one embedding pass if any is waiting
(``embedding_lane``), admits waiting requests (``scheduler``: at most ``slots`` sequences
run, while their KV caches fit the memory budget; up to ``max_queue`` more wait in FIFO order;
past that ``submit`` raises ``QueueFullError``), then runs one generation step. Prompts are
prefilled in chunks of ``prefill_step_size`` tokens between decode steps, so a long prompt
never stalls the running streams for long; on CUDA its first token is sampled from the last
chunk's pass (``last_positions``), not from a pass of its own at the next step. A prompt
starts from the longest cached prefix (``PrefixCache``), and the ``n`` choices of one request
prefill once: the others fork the first one's prompt cache. A cancelled sequence leaves the
batch at the next step. A sequence whose own code fails (``FaultTrap``) fails alone; a failing
step fails the batch.

End of sequence. The batch generator stops a sequence at an end-of-sequence token, except with
``ignore_eos``; ``min_tokens`` masks those tokens until then (``decode_batch``), and stop
strings count from then on (``TextOutput``); a stop string cancels the sequence through its
stream. A request's grammar masks every token it refuses and
decides where the text ends (``constraints``); each grammar compiles once per model.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from triton_mlx.engine import batch_generator, last_positions, lone_step, prompt_shapes
from triton_mlx.engine.constraints import GrammarCache
from triton_mlx.engine.detokenizer import Decoder, IncrementalDetokenizer
from triton_mlx.engine.embedding_lane import EmbeddingLane
from triton_mlx.engine.kv_budget import KVBudget, measure_budget
from triton_mlx.engine.loop_outbox import LoopOutbox
from triton_mlx.engine.model_thread import ModelThread
from triton_mlx.engine.prefix_cache import PrefixCache
from triton_mlx.engine.runtime_profile import on_cuda
from triton_mlx.engine.scheduler import ChoiceGroup, Scheduler
from triton_mlx.engine.sequence import Sequence
from triton_mlx.engine.stop_strings import StopStringMatcher
from triton_mlx.engine.stream import GenerationStream, deliver
from triton_mlx.engine.text_output import TextOutput
from triton_mlx.engine.tokenizer_access import encode_batch, fast_decoder
from triton_mlx.engine.types import (
    EngineError,
    EngineNotRunningError,
    EngineStats,
    GenerationRequest,
)

logger = logging.getLogger("triton_mlx.engine")

# Prompt tokens prefilled between two decode steps: the longest a running stream waits while
# a long prompt arrives. A CPU prefills a few hundred tokens per second, a GPU tens of
# thousands, so the CPU gets short chunks (fair) and the GPU long ones (efficient).
CPU_PREFILL_CHUNK = 128
GPU_PREFILL_CHUNK = 2048

LoadFn = Callable[[], tuple[Any, Any]]
"""Loads (model, tokenizer) on the engine thread; mlx-lm objects."""

__all__ = ["CPU_PREFILL_CHUNK", "GPU_PREFILL_CHUNK", "Engine", "LoadFn"]


class Engine(ModelThread):
    """Continuous-batching generation for one model, on a thread of its own."""

    thread_prefix = "engine"
    embeds = True  # serves /v1/embeddings too, where the architecture allows

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
        pad_prompts: bool | None = None,
        fold_first: bool | None = None,
        lone_compiled: bool | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        super().__init__(name)
        self.slots = slots
        self.max_queue = max_queue
        self._load = load
        self._prefill_step_size = prefill_step_size
        self._pad_prompts = pad_prompts  # prefill padded (prompt_shapes); None: on CUDA only
        self._fold_first = fold_first  # first token from the prefill pass; None: on CUDA only
        self._lone_compiled = lone_compiled  # lone step compiled; None: on the CPU (measured)
        self._lone_step: Any = None
        self._warmup = warmup
        self._memory_budget = memory_budget_bytes
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._outbox: LoopOutbox | None = None  # to the event loop of the last submit
        self.generated_tokens = 0
        self.prompt_tokens = 0
        budget = KVBudget(bytes_per_token=1, budget_bytes=0)  # measured once loaded
        self._scheduler = Scheduler(name, slots, max_queue, budget, PrefixCache(prefix_cache_bytes))
        self._embeddings = EmbeddingLane(name, max_queue)
        # Engine-thread state.
        self._model: Any = None
        self._tokenizer: Any = None
        self._generator: Any = None
        self._stream: Any = None
        self._decoder: Decoder | None = None
        self._vocab_size = 0
        self._eos_ids: list[int] = []
        self._grammars: GrammarCache | None = None
        self._by_uid: dict[int, Sequence] = {}  # the sequences in the batch
        self._faulted: list[Sequence] = []  # whose own code failed during a step (any thread)

    # ----- what front-ends read -----

    @property
    def tokenizer(self) -> Any:
        """mlx-lm's ``TokenizerWrapper`` (the Hugging Face tokenizer's attributes too)."""
        return self._tokenizer

    @property
    def grammars(self) -> GrammarCache | None:  # None until loaded
        return self._grammars

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def budget(self) -> KVBudget:
        """The KV memory budget; replaceable while the engine is idle."""
        return self._scheduler.budget

    @budget.setter
    def budget(self, budget: KVBudget) -> None:
        self._scheduler.budget = budget

    @property
    def answering(self) -> bool:
        """Whether it can serve (a model split across ranks may lose a rank)."""
        return True

    @property
    def layout(self) -> dict[str, Any] | None:
        """How the model is split across ranks (``distributed``); None: it is not."""
        return None

    @property
    def prefix_cache(self) -> PrefixCache:
        return self._scheduler.prefix_cache

    @property
    def dimensions(self) -> int:
        """Embedding width; 0 when the architecture cannot embed."""
        return self._embeddings.dimensions

    @property
    def max_seq_length(self) -> int:
        return self._embeddings.max_seq_length

    # ----- requests (called from the asyncio side) -----

    def submit(self, request: GenerationRequest, n: int = 1) -> list[GenerationStream]:
        """Queue ``n`` sequences for ``request`` (one per choice); they start at the next step
        when slots and memory allow. Choices after the first get seeds ``seed + i``."""
        if not self._accepting:
            raise EngineNotRunningError(f"model {self.name!r} is not accepting requests")
        self._scheduler.place(request, n)
        loop = asyncio.get_running_loop()
        if self._outbox is None or self._outbox.loop is not loop:
            self._outbox = LoopOutbox(loop)
        streams = self._new_streams(request, n)
        self._inbox.put(("submit", streams))
        return streams

    def _new_streams(self, request: GenerationRequest, n: int) -> list[GenerationStream]:
        """One stream per choice; choices after the first get seeds ``seed + i``."""
        streams = []
        for i in range(n):
            choice = request.for_choice(i)
            detokenizer = IncrementalDetokenizer(self._decoder, choice.skip_special_tokens)
            text = TextOutput(choice, detokenizer, StopStringMatcher(choice.stop))
            streams.append(GenerationStream(choice, self._request_cancel, text))
        return streams

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids for embedding (the tokenizer's own special tokens), cut to the context;
        one batched call to the Rust tokenizer (2x faster than one call per text)."""
        return [self.truncate(ids) for ids in encode_batch(self._tokenizer, texts)]

    def truncate(self, ids: list[int]) -> list[int]:
        return ids[: self.max_seq_length]

    async def embed(self, token_id_lists: list[list[int]]) -> Any:
        """(len(inputs), dimensions) float32 vectors: mean-pooled, L2-normalised last hidden
        states, computed on the engine thread between generation steps."""
        if not self._accepting:
            raise EngineNotRunningError(f"model {self.name!r} is not accepting requests")
        if not self.dimensions:
            raise EngineError(f"model {self.name!r} cannot compute embeddings")
        job = self._embeddings.new_job(token_id_lists)
        self._inbox.put(("embed", job))
        return await job.future

    def stats(self) -> EngineStats:
        running, queued = self._scheduler.occupancy()
        budget = self.budget
        return EngineStats(
            running=running,
            queued=queued,
            slots=self.slots,
            max_queue=self.max_queue,
            generated_tokens=self.generated_tokens,
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=self.prefix_cache.cached_tokens,
            prefix_cache_bytes=self.prefix_cache.nbytes,
            kv_reserved_bytes=budget.reserved_bytes,
            kv_budget_bytes=budget.budget_bytes,
        )

    def _request_cancel(self, stream: GenerationStream) -> None:
        self._inbox.put(("cancel", stream))

    def _request_stop(self) -> None:
        self._inbox.put(("stop", None))

    # ----- engine thread: setup and shutdown -----

    def _load_model(self) -> None:
        """Load and warm the model (on this thread)."""
        self._model, self._tokenizer = self._load()
        self._stream = mx.default_stream(mx.default_device())
        on_gpu = mx.default_device() == mx.gpu
        if self._prefill_step_size is None:
            self._prefill_step_size = GPU_PREFILL_CHUNK if on_gpu else CPU_PREFILL_CHUNK
        self._vocab_size = batch_generator.vocab_size(self._model)
        self._decoder = fast_decoder(self._tokenizer)
        self._eos_ids = sorted(self._tokenizer.eos_token_ids)
        self._grammars = GrammarCache(self._tokenizer, self._eos_ids)
        cuda = on_gpu and on_cuda()  # where these two default to on (their modules say why)
        self._pad_prompts = cuda if self._pad_prompts is None else self._pad_prompts
        self._fold_first = (cuda if self._fold_first is None else self._fold_first
                            ) and last_positions.supported(self._model)
        compiled = not on_gpu if self._lone_compiled is None else self._lone_compiled
        self._lone_step = lone_step.build(self._model) if compiled else None
        self._generator = self._new_generator()
        self.prefix_cache.watch_model(self._model)
        if self._warmup:  # on a GPU each batch size compiles once; a CPU compiles nothing
            batch_generator.warm_up(
                self._generator, self._tokenizer.encode("Hello")[-4:] or [0],
                self.slots if on_gpu else 1,
                prompt_shapes.lengths(self._prefill_step_size) if self._pad_prompts else ())
        if self.embeds:
            self._embeddings.attach(self._model, self._stream, self._prefill_step_size,
                                    on_pass=self._count_embedded)
        self.budget = measure_budget(self._model, self._stream, self._memory_budget, self.name)

    def _new_generator(self) -> Any:
        return batch_generator.new_generator(self._model, self._eos_ids, self.slots,
                                             self._prefill_step_size, self._stream,
                                             self._pad_prompts, self._fold_first,
                                             self._lone_step)

    def _count_embedded(self, tokens: int) -> None:
        self.prompt_tokens += tokens

    def _shutdown(self) -> None:
        """Fail what runs or waits (work that came after the stop too); release the model."""
        while True:  # work that came after the stop command
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._apply(*command)
        unloaded = EngineNotRunningError(f"model {self.name!r} was unloaded")
        self._fail_all(unloaded)
        self._embeddings.fail_all(unloaded)
        self._generator = None
        self._lone_step = None  # its compiled pieces hold the model's layers
        self._model = None

    # ----- engine thread: the loop -----

    def _serve(self) -> None:
        while True:
            idle = not self._by_uid and self._scheduler.idle and not self._embeddings.busy
            if idle:  # give back what the work left in MLX's buffer cache (prefill's peak)
                mx.clear_cache()
            if not self._drain_inbox(block=idle):
                return
            if self._embeddings.busy:
                self._embeddings.step()
            for group in self._scheduler.admit():
                self._start(group)
            if self._by_uid:
                self._step()

    def _drain_inbox(self, block: bool) -> bool:
        """Apply pending commands; returns False when the engine must stop."""
        while True:
            try:
                command = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if not self._apply(*command):
                return False

    def _apply(self, kind: str, payload: Any) -> bool:
        """Apply one command; returns False for "stop"."""
        if kind == "submit":
            self._scheduler.enqueue(payload)
        elif kind == "embed":
            self._embeddings.add(payload)
        elif kind == "cancel":
            self._cancel(payload)
        return kind != "stop"

    def _step(self) -> None:
        """One generation step; its tokens go to the event loop in one call."""
        try:
            prompt_responses, responses = self._generator.next()
            for response in prompt_responses:
                if response.end_of_prompt:
                    self.prefix_cache.store_prompt(self._generator, response.uid)
                    self._fork(response.uid)
            outputs = self._handle_step(responses)
        except Exception:
            logger.exception("engine step failed for model %s", self.name)
            self._fail_all(EngineError("generation failed inside the engine"))
            self._generator = self._new_generator()
            return
        if outputs:
            self._call_in_loop(deliver, outputs)

    # ----- engine thread: sequences in and out of the batch -----

    def _start(self, group: ChoiceGroup) -> None:
        """Put a group's leader in the batch; the other choices fork it once its prompt is
        in cache (``_fork``)."""
        leader = self._scheduler.lead(group)
        try:
            self._insert(leader)
        except Exception:
            logger.exception("could not start request",
                             extra={"request_id": leader.request.request_id})
            self._end(leader, EngineError("could not start generation"))  # and its followers

    def _insert(self, stream: GenerationStream, cache: list[Any] | None = None,
                cached: int = 0) -> Sequence:
        """Add one sequence to the batch, starting from ``cache`` (holding the first ``cached``
        prompt tokens) or from the prefix cache's longest match."""
        request = stream.request
        if cache is None:
            cache, cached = self.prefix_cache.fetch(list(request.prompt_tokens))
        uid, trap = batch_generator.insert(self._generator, request, cache, cached,
                                           self._vocab_size, self._eos_ids, self._grammars)
        sequence = Sequence(stream=stream, uid=uid, cached_tokens=cached, trap=trap)
        stream.admitted_at = time.perf_counter()
        trap.on_first_error = lambda: self._faulted.append(sequence)
        self._by_uid[uid] = sequence
        self._scheduler.started(sequence)
        self.prompt_tokens += len(request.prompt_tokens) - cached  # tokens actually prefilled
        return sequence

    def _fork(self, uid: int) -> None:
        """A sequence has its prompt in cache: if it leads an ``n`` > 1 request, the other
        choices start from a copy instead of prefilling the same prompt again."""
        leader = self._by_uid.get(uid)
        followers = self._scheduler.fork(leader.stream) if leader is not None else []
        if not followers:
            return
        shared = batch_generator.prompt_cache_to_fork(
            self._generator, uid, len(leader.request.prompt_tokens))
        for stream in followers:
            if shared is not None:
                cache, cached = shared
                sequence = self._insert(stream, copy.deepcopy(cache), cached)
            else:
                sequence = self._insert(stream)
            sequence.cached_tokens = leader.cached_tokens

    def _handle_step(self, responses: list[Any]) -> list[tuple[Any, ...]]:
        """The step's tokens for the event loop, one (stream, token, logprob, finish reason,
        cached tokens) per running sequence. A sequence whose own code failed during the step
        (its sampler or logits processors) fails alone; the rest of the batch goes on."""
        while self._faulted:
            sequence = self._faulted.pop()
            if self._by_uid.get(sequence.uid) is sequence:
                self._fail_sequence(sequence, sequence.trap.error)
        tokens = []
        ended = []
        by_uid = self._by_uid
        for response in responses:
            sequence = by_uid.get(response.uid)
            if sequence is None:  # cancelled or failed while this step ran
                continue
            tokens.append((sequence.stream, response.token, response.logprob,
                           response.finish_reason, sequence.cached_tokens))
            if response.finish_reason is not None:  # the generator has let go of it already
                ended.append((sequence, response))
        if ended:  # stored before the ends, which may start choices that fetch from the cache
            self.prefix_cache.store_all([(r.all_tokens, r.prompt_cache) for _, r in ended])
            for sequence, _ in ended:
                self._end(sequence.stream)
        self.generated_tokens += len(tokens)
        return tokens

    def _remove(self, sequence: Sequence) -> None:
        """Take a running sequence out of the batch, keeping its cache for later prompts."""
        keep = self.prefix_cache.enabled
        caches = self._generator.remove([sequence.uid], return_prompt_caches=keep)
        if keep and sequence.uid in caches:
            cache, tokens = caches[sequence.uid]
            self.prefix_cache.store(tokens, cache)

    def _cancel(self, stream: GenerationStream) -> None:
        group = self._scheduler.group_of(stream)
        if group is None:  # it has ended already
            return
        sequence = group.sequences.get(stream)
        if sequence is not None:
            self._remove(sequence)
        self._end(stream)

    def _fail_sequence(self, sequence: Sequence, exc: BaseException) -> None:
        """Fail one sequence (and the choices waiting to fork it) after its own code raised;
        the traceback goes to the log, the client gets a generic engine error."""
        logger.error("generation failed for one request of model %s; the others go on",
                     self.name, exc_info=exc,
                     extra={"request_id": sequence.request.request_id})
        if sequence.uid in self._by_uid:
            self._generator.remove([sequence.uid])
        self._end(sequence.stream, EngineError("generation failed inside the engine"))

    def _fail_all(self, error: EngineError) -> None:
        for stream in self._scheduler.streams():
            self._end(stream, error)

    def _end(self, stream: GenerationStream, error: EngineError | None = None) -> None:
        """Book the end of a choice that is out of the batch, telling its reader ``error``
        if it failed. Choices that were waiting to fork it start afresh, or fail with it."""
        group = self._scheduler.group_of(stream)
        if group is None:  # ended already
            return
        sequence = group.sequences.get(stream)
        if sequence is not None:
            del self._by_uid[sequence.uid]
        orphaned = self._scheduler.end(stream)
        if error is not None:
            self._call_in_loop(stream.put, error)
        if orphaned is None:
            return
        if error is None:
            self._start(orphaned)
        else:
            for follower in orphaned.unstarted():
                self._end(follower, error)

    def _call_in_loop(self, fn: Callable[..., None], arg: Any) -> None:
        if self._outbox is not None:
            self._outbox.post(fn, arg)
