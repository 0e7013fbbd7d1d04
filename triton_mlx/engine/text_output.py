"""What a reader sees of one sequence: its tokens turned into text, stop strings and logprobs.

This runs on the event loop, not on the engine thread: the engine thread only does MLX work and
hands each step's raw tokens over (``GenerationStream.feed``), so detokenizing, stop-string
matching and logprob formatting for a batch of hundreds of sequences overlap the next step's
dispatch instead of adding to it. A stop string found here ends the stream at once; the engine
learns of it through the stream's cancellation and takes the sequence out of the batch at its
next step (a token or two it generates meanwhile are dropped).
"""

from __future__ import annotations

import math

from triton_mlx.engine.detokenizer import IncrementalDetokenizer
from triton_mlx.engine.stop_strings import StopStringMatcher
from triton_mlx.engine.types import GenerationOutput, GenerationRequest, Logprob, TokenLogprob


class TextOutput:
    """One sequence's decoding, stop strings, logprobs and token count."""

    def __init__(self, request: GenerationRequest, detokenizer: IncrementalDetokenizer,
                 stop: StopStringMatcher) -> None:
        self.request = request
        self.detokenizer = detokenizer
        self.stop = stop
        self.completion_tokens = 0
        self.pending_logprobs: list[TokenLogprob] = []

    def advance(
        self, token: int, logprob: Logprob | None, finish_reason: str | None,
        cached_tokens: int = 0,
    ) -> tuple[GenerationOutput | None, bool]:
        """Take one generated token; return (output to send or None, stopped by a stop string).

        ``finish_reason`` is the batch's: "stop" for an end-of-sequence token (which is not
        part of the text), "length" at ``max_tokens``, else None. With ``ignore_eos`` the batch
        does not stop at one: it arrives here as a plain token. Stop strings count from the
        ``min_tokens``-th token on (vLLM's rule).
        """
        self.completion_tokens += 1
        if finish_reason == "stop":
            text = self.detokenizer.flush()
        else:
            if self.request.logprobs is not None and logprob is not None:
                self.pending_logprobs.append(_token_logprob(token, logprob,
                                                            self.request.logprobs))
            text = self.detokenizer.add(token)
            if finish_reason == "length":
                text += self.detokenizer.flush()
        may_stop = self.completion_tokens >= self.request.min_tokens
        text, stopped = self.stop.feed(text, may_stop)
        finish = "stop" if stopped else finish_reason
        if finish is not None and not stopped:
            text += self.stop.flush()
        if finish is None and not text:
            return None, False  # held back: a partial character or a possible stop string
        output = GenerationOutput(
            text=text,
            completion_tokens=self.completion_tokens,
            finish_reason=finish,
            logprobs=tuple(self.pending_logprobs),
            cached_tokens=cached_tokens,
            stop_string=self.stop.matched if stopped else None,
        )
        self.pending_logprobs.clear()
        return output, stopped


def _token_logprob(token: int, logprob: Logprob, top: int) -> TokenLogprob:
    """The chosen token's log probability and the ``top`` most likely tokens, from the step's
    (value, alternatives best first): under a grammar, those of the masked distribution."""
    value, alternatives = logprob
    if top <= 0:
        return TokenLogprob(token, value)
    # A grammar's mask leaves its refused tokens at -inf: they are no alternatives.
    return TokenLogprob(token, value, tuple((int(i), float(v)) for i, v in alternatives[:top]
                                            if v != -math.inf))
