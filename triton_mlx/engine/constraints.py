"""Constrained decoding: each token of a sequence with a grammar is sampled under its mask.

Why it looks like this. A request's ``grammar`` is an llguidance grammar (JSON schema, regex or
Lark, compiled to llguidance's JSON by the serving layer). llguidance needs its own view of the
tokenizer, which takes about a second to build for a 50k vocabulary, so ``GrammarCache`` builds it
on the engine thread at the first constrained request: model loads and unconstrained traffic never
pay for it. Compiling a grammar costs milliseconds (more for big schemas) while copying a compiled
matcher costs microseconds, so each distinct grammar compiles once per model (a bounded LRU of
pristine matchers) and every sequence gets a ``deep_copy`` (``n`` > 1 too: one matcher per choice).

Where the mask goes. One ``GrammarMasker`` serves a whole batch: at each decode step the batch
generator (``grammar_batch``) hands it the logits of every row, the tokens each row fed the model
this step and the rows that carry a ``ConstrainedSequence``. For those rows only, it feeds each
matcher the token its row sampled last step (never the prompt: a row's first step feeds its last
prompt token, which the matcher skips; one ``consume_token`` per row, about 2 us, cheaper than
llguidance's parallel consume on a batch this small), fills all their bitmasks in one llguidance
call (in Rust, spread over its threads), unpacks them once and applies them to the whole batch
in one MLX operation: refused tokens get -inf. On a CPU numpy unpacks the bits; on a GPU the
packed bits (32 times smaller) go over and are unpacked there. Rows without a grammar get an
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
    """Applies the grammars of a batch's constrained rows to its logits, once per step."""

    def __init__(self, unpack_on_device: bool | None = None) -> None:
        self._executor: llguidance.LLExecutor | None = None  # its thread pool starts on first use
        if unpack_on_device is None:
            unpack_on_device = mx.default_device().type == mx.DeviceType.gpu
        self.unpack_on_device = unpack_on_device
        """On a GPU the packed bits (32x smaller) go over and are unpacked there; on a CPU
        numpy unpacks them faster than MLX's CPU backend would."""

    def apply(self, logits: mx.array, inputs: mx.array,
              rows: Sequence[tuple[int, ConstrainedSequence]]) -> mx.array:
        """``logits`` (batch, vocab) with each constrained row's refused tokens at -inf.

        ``inputs`` (batch,) holds what each row fed the model this step: the token it sampled
        at the step before, which its matcher consumes, or at its first step its last prompt
        token, which it does not. ``rows`` pairs a row index with its sequence, in row order.
        """
        if not rows:
            return logits
        # No mx.async_eval(logits) to overlap the fill with the forward pass: on MLX's CUDA
        # backend (0.32.4) that call blocked ~5 ms at batch 64 and made the step slower
        # (9.4-10.0 ms against 6.9 ms on an H200), dispatched after this wait it did not help
        # either; on the CPU it changed nothing.
        tokens = inputs.tolist()
        executor = self._executor or llguidance.LLExecutor()
        self._executor = executor
        sequences = [sequence for _, sequence in rows]
        for i, sequence in rows:
            if sequence.started:
                _guarded(sequence, lambda s=sequence, t=tokens[i]: s.consume(t))
        bits = self._fill(executor, sequences)
        for k, sequence in enumerate(sequences):
            sequence.started = True
            if sequence.matcher.is_error():
                sequence.fail(GrammarError(sequence.matcher.get_error()))
            if sequence.failed:  # its trap fails it after this step; let the batch finish
                bits[k] = -1
            else:
                sequence.hold_back_end(bits[k])
        if self.unpack_on_device:
            return mx.minimum(logits, _device_limit(bits, [i for i, _ in rows], logits))
        allowed = unpack_bitmask(bits, logits.shape[-1])
        if len(rows) < logits.shape[0]:  # the other rows: every token allowed
            every = np.ones((logits.shape[0], allowed.shape[1]), dtype=np.uint8)
            every[[i for i, _ in rows]] = allowed
            allowed = every
        # +inf where allowed, -inf where refused: a minimum is the mask, and MLX's CPU backend
        # runs it several times faster than a where.
        limit = (mx.array(allowed).astype(logits.dtype) * 2 - 1) * mx.inf
        return mx.minimum(logits, limit)

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


def _guarded(sequence: ConstrainedSequence, call: Callable[[], Any]) -> None:
    if sequence.failed:
        return
    try:
        call()
    except Exception as exc:
        sequence.fail(exc)


def _device_limit(bits: np.ndarray, rows: list[int], logits: mx.array) -> mx.array:
    """+inf where allowed, -inf where refused, for the whole batch, unpacked on the device from
    the constrained rows' packed bits; rows without a grammar allow everything."""
    batch, vocab = logits.shape
    words = mx.array(bits)  # (rows, words) int32
    shifts = mx.arange(32, dtype=mx.int32)  # made per call: arrays belong to their thread
    allowed = ((words[:, :, None] >> shifts) & 1).reshape(words.shape[0], -1)
    if allowed.shape[1] >= vocab:
        allowed = allowed[:, :vocab]
    else:
        allowed = mx.pad(allowed, [(0, 0), (0, vocab - allowed.shape[1])])
    limit = mx.where(allowed == 1, mx.inf, -mx.inf).astype(logits.dtype)
    if len(rows) == batch:
        return limit
    full = mx.full((batch, vocab), mx.inf, dtype=logits.dtype)
    full[mx.array(rows)] = limit
    return full


def unpack_bitmask(bits: np.ndarray, vocab_size: int) -> np.ndarray:
    """(batch, vocab_size) uint8, 1 where allowed, from llguidance's (batch, words) int32
    bitmask (one bit per token, least significant first); tokens past the bitmask (padding of the
    model's vocabulary) are refused. Unpacked on the host: numpy does it in microseconds."""
    allowed = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")
    if allowed.shape[1] >= vocab_size:
        return allowed[:, :vocab_size]
    return np.pad(allowed, [(0, 0), (0, vocab_size - allowed.shape[1])])
