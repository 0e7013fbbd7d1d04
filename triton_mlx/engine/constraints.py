"""Constrained decoding: each token of a sequence with a grammar is sampled under its mask.

Why it looks like this. A request's ``grammar`` is an llguidance grammar (JSON schema, regex or
Lark, compiled to llguidance's JSON by the serving layer). llguidance needs its own view of the
tokenizer, which takes about a second to build for a 50k vocabulary, so ``GrammarCache`` builds it
on the engine thread at the first constrained request: model loads and unconstrained traffic never
pay for it. Compiling a grammar costs milliseconds (more for big schemas) while copying a compiled
matcher costs microseconds, so each distinct grammar compiles once per model (a bounded LRU of
pristine matchers) and every sequence gets a ``deep_copy`` (``n`` > 1 too: one matcher per choice).

Where the mask goes. One ``GrammarMasker`` serves a whole batch: at each decode step the batch
generator (``grammar_batch``) hands it the tokens each row fed the model this step and the rows
that carry a ``ConstrainedSequence``, then dispatches the forward pass while the masker's worker
thread, for those rows only, feeds each matcher the token its row sampled last step (never the
prompt: a row's first step feeds its last prompt token, which the matcher skips; one
``consume_token`` per row, about 2 us) and fills all their bitmasks in one llguidance call (in
Rust, spread over its threads). The masks then go on the whole batch in one operation: refused
tokens get -inf. On a CPU numpy unpacks the bits; on a GPU the packed bits (32 times smaller) go
over and one compiled function unpacks and applies them. Rows without a grammar get an
all-allowed row (gathering and scattering the constrained rows costs more than that on MLX's CPU
backend), and a batch without any grammar costs nothing.

The end. llguidance admits an end-of-sequence token exactly where the text is complete, and only
such a token once the grammar cannot go on: the batch generator then ends the sequence with
"stop". Under a grammar ``ignore_eos`` has no effect (the grammar decides where the text ends, and
a finished grammar must not loop), and ``min_tokens`` holds end-of-sequence back only while the
grammar allows another token. ``max_tokens`` reached first ends it with "length". A matcher in
error (a token it refuses, a resource limit) is reported to its sequence's ``on_error`` (the
engine's ``FaultTrap``, which fails that sequence alone) and its row is left unmasked meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import llguidance
import llguidance.numpy as llg_numpy
import mlx.core as mx
import numpy as np

from triton_mlx.engine.tokenizer_access import grammar_tokenizer

logger = logging.getLogger("triton_mlx.engine")

DEFAULT_CAPACITY = 64
"""Compiled grammars kept per model; a client cycling through more recompiles the oldest."""

ErrorSink = Callable[[Exception], None]


class GrammarError(Exception):
    """A grammar could not compile, or a sequence left it; the message is llguidance's."""


class GrammarCache:
    """One model's compiled grammars, and the matchers of its constrained sequences."""

    def __init__(self, tokenizer: Any, eos_ids: list[int],
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self._tokenizer = tokenizer
        self._eos_ids = eos_ids
        self._capacity = capacity
        self._llg_tokenizer: llguidance.LLTokenizer | None = None
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self.compilations = 0
        """Grammars compiled so far (a cache hit does not count)."""

    def sequence(self, grammar: str, min_tokens: int,
                 on_error: ErrorSink) -> ConstrainedSequence:
        """The grammar state of one new sequence under ``grammar``."""
        matcher = self.matcher(grammar)
        return ConstrainedSequence(matcher, self._llguidance_tokenizer().vocab_size,
                                   self._eos_ids if min_tokens > 0 else [], min_tokens, on_error)

    def matcher(self, grammar: str) -> llguidance.LLMatcher:
        """A fresh matcher for ``grammar``, compiled at most once while it stays cached."""
        pristine = self._compiled.get(grammar)
        if pristine is None:
            pristine = self._compile(grammar)
            self._compiled[grammar] = pristine
            if len(self._compiled) > self._capacity:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(grammar)
        return pristine.deep_copy()

    def _compile(self, grammar: str) -> llguidance.LLMatcher:
        matcher = llguidance.LLMatcher(self._llguidance_tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        self.compilations += 1
        return matcher

    def _llguidance_tokenizer(self) -> llguidance.LLTokenizer:
        if self._llg_tokenizer is None:
            start = time.perf_counter()
            self._llg_tokenizer = grammar_tokenizer(self._tokenizer, self._eos_ids)
            logger.info("built the grammar tokenizer (%d tokens) in %.2f s",
                        self._llg_tokenizer.vocab_size, time.perf_counter() - start)
        return self._llg_tokenizer


class ConstrainedSequence:
    """One sequence's matcher and how far it has gone.

    ``grammar_vocab`` is llguidance's vocabulary size: the logits may be wider, and the model's
    padding tokens are refused. ``suppress`` (the end-of-sequence tokens) stays refused until
    ``min_tokens`` tokens are generated, unless the grammar allows nothing else. ``on_error``
    hears of a matcher in error, once.
    """

    def __init__(self, matcher: llguidance.LLMatcher, grammar_vocab: int, suppress: list[int],
                 min_tokens: int, on_error: ErrorSink) -> None:
        self.matcher = matcher
        self.grammar_vocab = grammar_vocab
        self.generated = 0
        """Tokens consumed so far: all but the one sampled at the latest step."""
        self.started = False
        """Whether the matcher has masked a step: from then on each step feeds it a token."""
        self.failed = False
        self._suppress = [t for t in suppress if t < grammar_vocab]
        self._min_tokens = min_tokens
        self._on_error = on_error

    def consume(self, token: int) -> None:
        """Feed the token sampled at the step before; a refused one puts the matcher in error."""
        self.generated += 1
        if not self.failed:
            self.matcher.consume_token(token)

    def fail(self, error: Exception) -> None:
        if not self.failed:
            self.failed = True
            self._on_error(error)

    def hold_back_end(self, bits: np.ndarray) -> None:
        """Clear the end-of-sequence bits of this row's bitmask while ``min_tokens`` is not
        reached and something else remains allowed."""
        if not self._suppress or self.generated >= self._min_tokens:
            return
        words = bits.view(np.uint32)
        held = words.copy()
        for token in self._suppress:
            held[token >> 5] &= np.uint32(~(1 << (token & 31)) & 0xFFFFFFFF)
        if held.any():
            words[:] = held


class GrammarMasker:
    """Applies the grammars of a batch's constrained rows to its logits, once per step.

    A step is two calls: ``start`` waits for the tokens the rows fed the model and hands the
    matchers' work (consume, fill, unpack on a CPU) to this masker's worker thread; ``mask``
    takes its result. Between them the batch generator dispatches the forward pass, so the
    host fills the masks while it launches the model's kernels: on MLX's CUDA backend a decode
    step is bound by that launch work, and filling before it made a 64-row step ~35% longer.
    """

    def __init__(self, unpack_on_device: bool | None = None) -> None:
        self._executor: llguidance.LLExecutor | None = None  # its thread pool starts on first use
        self._worker: ThreadPoolExecutor | None = None  # its thread ends with this masker
        if unpack_on_device is None:
            unpack_on_device = mx.default_device().type == mx.DeviceType.gpu
        self.unpack_on_device = unpack_on_device
        """On a GPU the packed bits (32x smaller) go over and are unpacked there, by one
        compiled function; on a CPU numpy unpacks them faster than MLX's CPU backend would."""
        self._mask_words = mx.compile(_mask_words)

    def start(self, inputs: mx.array, rows: Sequence[tuple[int, ConstrainedSequence]],
              vocab: int) -> Future[np.ndarray]:
        """Start computing the masks of ``rows`` for a (batch, ``vocab``) step; pass the result
        to ``mask``.

        ``inputs`` (batch,) holds what each row fed the model this step: the token it sampled
        at the step before, which its matcher consumes, or at its first step its last prompt
        token, which it does not. ``rows`` pairs a row index with its sequence, in row order.
        """
        tokens = inputs.tolist()  # waits for the step before's tokens
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="triton-mlx-grammar")
            self._executor = llguidance.LLExecutor()
        return self._worker.submit(self._rows_mask, tokens, list(rows), vocab)

    def mask(self, logits: mx.array, pending: Future[np.ndarray]) -> mx.array:
        """``logits`` (batch, vocab) with each constrained row's refused tokens at -inf."""
        result = pending.result()
        if self.unpack_on_device:
            return self._mask_words(logits, mx.array(result))
        # +inf where allowed, -inf where refused: a minimum is the mask, and MLX's CPU backend
        # runs it several times faster than a where.
        return mx.minimum(logits, (mx.array(result).astype(logits.dtype) * 2 - 1) * mx.inf)

    def apply(self, logits: mx.array, inputs: mx.array,
              rows: Sequence[tuple[int, ConstrainedSequence]]) -> mx.array:
        """``start`` and ``mask`` in one call, for callers with nothing to do in between."""
        if not rows:
            return logits
        return self.mask(logits, self.start(inputs, rows, logits.shape[-1]))

    def _rows_mask(self, tokens: list[int], rows: list[tuple[int, ConstrainedSequence]],
                   vocab: int) -> np.ndarray:
        """On the worker: feed each matcher its token, fill their bitmasks, and lay them out
        for the whole batch: the packed words, or on the host path the unpacked bytes."""
        assert self._executor is not None
        for i, sequence in rows:
            if sequence.started:
                _guarded(sequence, lambda s=sequence, t=tokens[i]: s.consume(t))
        sequences = [sequence for _, sequence in rows]
        bits = self._fill(self._executor, sequences)
        for k, sequence in enumerate(sequences):
            sequence.started = True
            if sequence.matcher.is_error():
                sequence.fail(GrammarError(sequence.matcher.get_error()))
            if sequence.failed:  # its trap fails it after this step; let the batch finish
                bits[k] = -1
            else:
                sequence.hold_back_end(bits[k])
        # Rows without a grammar allow every token (gathering and scattering the constrained
        # rows costs more than that on MLX's CPU backend); past a grammar's vocabulary, the
        # model's padding tokens, a constrained row refuses.
        words = np.full((len(tokens), (vocab + 31) // 32), -1, dtype=np.int32)
        index = [i for i, _ in rows]
        width = min(bits.shape[1], words.shape[1])
        words[index, :width] = bits[:, :width]
        words[index, width:] = 0
        if self.unpack_on_device:
            return words
        return unpack_bitmask(words, vocab)

    @staticmethod
    def _fill(executor: llguidance.LLExecutor,
              sequences: list[ConstrainedSequence]) -> np.ndarray:
        bits = llg_numpy.allocate_token_bitmask(len(sequences), sequences[0].grammar_vocab)
        try:
            llg_numpy.fill_next_token_bitmask_par(
                executor, [(s.matcher, k) for k, s in enumerate(sequences)], bits)
        except Exception:  # not a matcher's own error (that is a state): find out whose
            for k, sequence in enumerate(sequences):
                _guarded(sequence, lambda s=sequence, k=k: llg_numpy.fill_next_token_bitmask(
                    s.matcher, bits, k))
        return bits


def _mask_words(logits: mx.array, words: mx.array) -> mx.array:
    """``logits`` (batch, vocab) at -inf where the bit of ``words`` (batch, >= vocab / 32
    int32, least significant bit first) is clear; compiled, one kernel on a GPU."""
    allowed = (words[:, :, None] >> mx.arange(32, dtype=mx.int32)) & 1
    allowed = allowed.reshape(words.shape[0], -1)[:, : logits.shape[-1]]
    return mx.where(allowed == 1, logits, mx.array(-mx.inf, dtype=logits.dtype))


def _guarded(sequence: ConstrainedSequence, call: Callable[[], Any]) -> None:
    if sequence.failed:
        return
    try:
        call()
    except Exception as exc:
        sequence.fail(exc)


def unpack_bitmask(bits: np.ndarray, vocab_size: int) -> np.ndarray:
    """(batch, vocab_size) uint8, 1 where allowed, from llguidance's (batch, words) int32
    bitmask (one bit per token, least significant first); tokens past the bitmask (padding of the
    model's vocabulary) are refused. Unpacked on the host: numpy does it in microseconds."""
    allowed = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")
    if allowed.shape[1] >= vocab_size:
        return allowed[:, :vocab_size]
    return np.pad(allowed, [(0, 0), (0, vocab_size - allowed.shape[1])])
