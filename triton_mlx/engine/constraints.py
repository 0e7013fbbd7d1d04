"""Constrained decoding: each token of a sequence with a grammar is sampled under its mask.

Why it looks like this. A request's ``grammar`` is an llguidance grammar (JSON schema, regex or
Lark, compiled to llguidance's JSON by the serving layer). llguidance needs its own view of the
tokenizer, which takes about a second to build for a 50k vocabulary, so ``GrammarCache`` builds it
on the engine thread at the first constrained request: model loads and unconstrained traffic never
pay for it. Compiling a grammar costs milliseconds (more for big schemas) while copying a compiled
matcher costs microseconds, so each distinct grammar compiles once per model (a bounded LRU of
pristine matchers) and every sequence gets a ``deep_copy`` (``n`` > 1 too: one matcher per choice).

Where the mask goes. mlx-lm's ``BatchGenerator`` applies logits processors row by row, and it
pipelines: the token sampled at one step is only known when the next step's processors run. So
``GrammarProcessor`` is a per-sequence logits processor that first feeds the token sampled last
step to its matcher (never the prompt), then fills the next mask (llguidance, in Rust) and applies
it with MLX ops: masked-out tokens get -inf. A batched fill for all constrained rows would need a
hook between the forward pass and the per-row processors, which ``BatchGenerator`` does not offer
without forking it. Unconstrained sequences carry no grammar processor.

The end. llguidance admits an end-of-sequence token exactly where the text is complete, and only
such a token once the grammar cannot go on: the batch generator then ends the sequence with
"stop". Under a grammar ``ignore_eos`` has no effect (the grammar decides where the text ends, and
a finished grammar must not loop), and ``min_tokens`` holds end-of-sequence back only while the
grammar allows another token. ``max_tokens`` reached first ends it with "length". A matcher in
error (a token it refuses, a resource limit) raises, and the sequence's ``FaultTrap`` fails that
sequence alone.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import llguidance
import llguidance.numpy as llg_numpy
import mlx.core as mx

from triton_mlx.engine.tokenizer_access import grammar_tokenizer

logger = logging.getLogger("triton_mlx.engine")

DEFAULT_CAPACITY = 64
"""Compiled grammars kept per model; a client cycling through more recompiles the oldest."""


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

    def processor(self, grammar: str, prompt_length: int, min_tokens: int) -> GrammarProcessor:
        """The logits processor of one new sequence under ``grammar``."""
        matcher = self.matcher(grammar)
        return GrammarProcessor(matcher, prompt_length, self._llguidance_tokenizer().vocab_size,
                                self._eos_ids if min_tokens > 0 else [], min_tokens)

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


class GrammarProcessor:
    """A logits processor that keeps one sequence inside its grammar.

    Called by the batch generator with the sequence's tokens so far (prompt, then generated)
    and its logits of shape (1, vocab); returns them with every token the grammar refuses at
    -inf. ``grammar_vocab`` is llguidance's vocabulary size: the logits may be wider, and the
    model's padding tokens are refused. ``suppress`` (the end-of-sequence tokens) stays refused
    until ``min_tokens`` tokens are generated, unless the grammar allows nothing else.
    """

    def __init__(self, matcher: llguidance.LLMatcher, prompt_length: int, grammar_vocab: int,
                 suppress: list[int], min_tokens: int) -> None:
        self._matcher = matcher
        self._prompt_length = prompt_length
        self._suppress = mx.array(suppress, dtype=mx.int32) if suppress else None
        self._min_tokens = min_tokens
        self._consumed = 0
        self._bitmask = llg_numpy.allocate_token_bitmask(1, grammar_vocab)

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        generated = tokens.size - self._prompt_length
        if generated > self._consumed:  # the token sampled at the previous step
            self._matcher.consume_token(int(tokens[-1].item()))
            self._consumed = generated
        llg_numpy.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        if self._matcher.is_error():
            raise GrammarError(self._matcher.get_error())
        allowed = unpack_bitmask(mx.array(self._bitmask), logits.shape[-1])
        if self._suppress is not None and generated < self._min_tokens:
            allowed = self._hold_back_end(allowed)
        return mx.where(allowed, logits, -mx.inf)

    def _hold_back_end(self, allowed: mx.array) -> mx.array:
        """``allowed`` less the end-of-sequence tokens, when something else remains."""
        keep = mx.ones((allowed.shape[-1],), dtype=mx.bool_)
        keep[self._suppress] = False
        held = allowed & keep
        return mx.where(mx.any(held), held, allowed)


def unpack_bitmask(bits: mx.array, vocab_size: int) -> mx.array:
    """(batch, vocab_size) booleans from llguidance's (batch, words) int32 bitmask, one bit per
    token, least significant first; tokens past the bitmask (padding of the model's vocabulary)
    are refused."""
    batch, words = bits.shape
    # Made per call: an MLX array belongs to the stream of the thread that made it.
    shifts = mx.arange(32, dtype=mx.int32)
    allowed = (((bits[:, :, None] >> shifts) & 1) == 1).reshape(batch, words * 32)
    if allowed.shape[1] >= vocab_size:
        return allowed[:, :vocab_size]
    return mx.pad(allowed, [(0, 0), (0, vocab_size - allowed.shape[1])], constant_values=False)
