"""One engine thread per model: continuous batching over mlx-lm's ``BatchGenerator``.

Threading model. Every MLX call for a model happens on its engine thread (MLX streams belong to
the thread that made them). The asyncio side talks to the thread through two channels only:
``submit``/``cancel`` put commands in a thread-safe inbox, and the thread hands each step's
outputs back with a single ``loop.call_soon_threadsafe`` per step, so the event loop wakes once
per step rather than once per token.

Scheduling. A request joins the running batch at the very next step. At most ``slots``
sequences run at once; up to ``max_queue`` more wait in FIFO order; past that ``submit`` raises
``QueueFullError``. Prompts are prefilled in chunks between decode steps (mlx-lm's
``prefill_step_size``), and a cancelled sequence leaves the batch at the next step, freeing its
slot.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from triton_mlx.engine.detokenizer import Decoder, IncrementalDetokenizer
from triton_mlx.engine.stop_strings import StopStringMatcher
from triton_mlx.engine.types import (
    EngineError,
    EngineNotRunningError,
    EngineStats,
    GenerationOutput,
    GenerationRequest,
    QueueFullError,
)

logger = logging.getLogger("triton_mlx.engine")

_FINISHED = object()  # queue sentinel: the stream has delivered its last output


class GenerationStream:
    """The asyncio side of one request: iterate it for outputs; ``cancel()`` to stop early.

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


@dataclass
class _Sequence:
    """Engine-thread state of one running sequence."""

    stream: GenerationStream
    detokenizer: IncrementalDetokenizer
    stop: StopStringMatcher
    completion_tokens: int = 0
    uid: int = -1
    started: float = field(default_factory=time.perf_counter)


LoadFn = Callable[[], tuple[Any, Any]]
"""Loads (model, tokenizer) on the engine thread; mlx-lm objects."""


class Engine:
    """Continuous-batching generation for one model, on a thread of its own."""

    def __init__(
        self,
        load: LoadFn,
        *,
        name: str,
        slots: int,
        max_queue: int,
        prefill_step_size: int = 512,
        warmup: bool = True,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.name = name
        self.slots = slots
        self.max_queue = max_queue
        self._load = load
        self._prefill_step_size = prefill_step_size
        self._warmup = warmup
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting, guarded by _lock
        self._running = 0
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.generated_tokens = 0
        self.prompt_tokens = 0
        # Engine-thread state.
        self._model: Any = None
        self._tokenizer: Any = None
        self._generator: Any = None
        self._waiting: deque[GenerationStream] = deque()
        self._by_uid: dict[int, _Sequence] = {}
        self._by_stream: dict[GenerationStream, _Sequence] = {}
        self._vocab_size = 0
        self._decoder: Decoder | None = None

    # ----- lifecycle (called from the asyncio side) -----

    def start(self) -> None:
        """Start the thread and load the model there; ``wait_loaded`` reports the outcome."""
        self._thread = threading.Thread(target=self._main, name=f"engine-{self.name}", daemon=True)
        self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Block until the model is loaded and warm; re-raise the load error if it failed."""
        if not self._loaded.wait(timeout):
            raise TimeoutError(f"model {self.name!r} did not load within {timeout} s")
        if self._load_error is not None:
            raise self._load_error

    def stop(self, timeout: float | None = 10.0) -> None:
        """Fail what is queued or running, end the thread and release the model."""
        self._accepting = False
        self._inbox.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    # ----- requests (called from the asyncio side) -----

    def submit(self, request: GenerationRequest) -> GenerationStream:
        """Queue ``request``; it starts at the next step when a slot is free."""
        if not self._accepting:
            raise EngineNotRunningError(f"model {self.name!r} is not accepting requests")
        with self._lock:
            if self._admitted >= self.slots + self.max_queue:
                raise QueueFullError(
                    f"model {self.name!r} is busy: {self.slots} requests running and "
                    f"{self.max_queue} waiting; retry later"
                )
            self._admitted += 1
        self._loop = asyncio.get_running_loop()
        stream = GenerationStream(self, request)
        self._command(("submit", stream))
        return stream

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
        )

    def _command(self, command: tuple[str, Any]) -> None:
        self._inbox.put(command)

    # ----- engine thread -----

    def _main(self) -> None:
        try:
            import mlx.core as mx

            self._model, self._tokenizer = self._load()
            self._stream = mx.default_stream(mx.default_device())
            self._vocab_size = _vocab_size(self._model)
            self._decoder = _fast_decoder(self._tokenizer)
            self._generator = self._new_generator()
            if self._warmup:
                self._warm_up()
        except BaseException as exc:  # reported through wait_loaded
            self._load_error = exc
            self._loaded.set()
            return
        self._accepting = True
        self._loaded.set()
        try:
            self._serve()
        finally:
            self._fail_all(EngineNotRunningError(f"model {self.name!r} was unloaded"))
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

    def _warm_up(self) -> None:
        """Run one short generation so the first request pays no compilation or allocation."""
        prompt = self._tokenizer.encode("Hello")[-4:] or [0]
        (uid,) = self._generator.insert([prompt], max_tokens=[2])
        finished = False
        while not finished:
            _, responses = self._generator.next()
            finished = any(r.uid == uid and r.finish_reason for r in responses)

    def _serve(self) -> None:
        while True:
            idle = not self._by_uid and not self._waiting
            if not self._drain_inbox(block=idle):
                return
            self._admit()
            if not self._by_uid:
                continue
            try:
                _, responses = self._generator.next()
            except Exception:
                logger.exception("engine step failed for model %s", self.name)
                self._fail_all(EngineError("generation failed inside the engine"))
                self._generator = self._new_generator()
                continue
            self._deliver([self._handle(r) for r in responses])

    def _drain_inbox(self, block: bool) -> bool:
        """Apply pending commands; returns False when the engine must stop."""
        while True:
            try:
                kind, stream = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if kind == "stop":
                return False
            if kind == "submit":
                self._waiting.append(stream)
            elif kind == "cancel":
                self._cancel(stream)

    def _admit(self) -> None:
        while self._waiting and len(self._by_uid) < self.slots:
            stream = self._waiting.popleft()
            try:
                self._insert(stream)
            except Exception:
                logger.exception(
                    "could not start request", extra={"request_id": stream.request.request_id}
                )
                self._finish_failed(stream, EngineError("could not start generation"))

    def _insert(self, stream: GenerationStream) -> None:
        from triton_mlx.engine.sampling import make_logits_processors, make_sampler

        request = stream.request
        (uid,) = self._generator.insert(
            [list(request.prompt_tokens)],
            max_tokens=[request.max_tokens],
            samplers=[make_sampler(request.sampling, self._vocab_size)],
            logits_processors=[
                make_logits_processors(request.sampling, len(request.prompt_tokens))
            ],
        )
        decoder = self._decoder
        sequence = _Sequence(
            stream=stream,
            detokenizer=IncrementalDetokenizer(decoder),
            stop=StopStringMatcher(request.stop),
            uid=uid,
        )
        self._by_uid[uid] = sequence
        self._by_stream[stream] = sequence
        self._running = len(self._by_uid)
        self.prompt_tokens += len(request.prompt_tokens)

    def _handle(self, response: Any) -> tuple[GenerationStream, GenerationOutput] | None:
        sequence = self._by_uid.get(response.uid)
        if sequence is None:  # cancelled while this step ran
            return None
        sequence.completion_tokens += 1
        self.generated_tokens += 1
        finish = response.finish_reason
        if finish == "stop":  # an end-of-sequence token: it is not part of the text
            text = sequence.detokenizer.flush()
        else:
            text = sequence.detokenizer.add(response.token)
            if finish == "length":
                text += sequence.detokenizer.flush()
        text, stopped = sequence.stop.feed(text)
        if stopped:
            finish = "stop"
            if response.finish_reason is None:
                self._generator.remove([response.uid])
        elif finish is not None:
            text += sequence.stop.flush()
        if finish is not None:
            self._release(sequence)
        elif not text:
            return None
        return sequence.stream, GenerationOutput(text, sequence.completion_tokens, finish)

    def _cancel(self, stream: GenerationStream) -> None:
        sequence = self._by_stream.get(stream)
        if sequence is not None:
            self._generator.remove([sequence.uid])
            self._release(sequence)
        elif stream in self._waiting:
            self._waiting.remove(stream)
            self._free_admission()

    def _release(self, sequence: _Sequence) -> None:
        del self._by_uid[sequence.uid]
        del self._by_stream[sequence.stream]
        self._running = len(self._by_uid)
        self._free_admission()

    def _free_admission(self) -> None:
        with self._lock:
            self._admitted -= 1

    def _fail_all(self, error: EngineError) -> None:
        for sequence in list(self._by_uid.values()):
            self._release(sequence)
            self._deliver_error(sequence.stream, error)
        while self._waiting:
            self._finish_failed(self._waiting.popleft(), error)

    def _finish_failed(self, stream: GenerationStream, error: EngineError) -> None:
        self._free_admission()
        self._deliver_error(stream, error)

    def _deliver(self, outputs: list[tuple[GenerationStream, GenerationOutput] | None]) -> None:
        batch = [item for item in outputs if item is not None]
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
