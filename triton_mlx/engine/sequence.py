"""Engine-thread state of one running sequence, and how its tokens become outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from triton_mlx.engine.detokenizer import IncrementalDetokenizer
from triton_mlx.engine.fault_trap import FaultTrap
from triton_mlx.engine.stop_strings import StopStringMatcher
from triton_mlx.engine.stream import GenerationStream
from triton_mlx.engine.types import GenerationOutput, GenerationRequest, TokenLogprob


@dataclass(eq=False)
class Sequence:
    """One sequence in the batch: decoding, stop strings, logprobs and its token count."""

    stream: GenerationStream
    detokenizer: IncrementalDetokenizer
    stop: StopStringMatcher
    uid: int = -1
    completion_tokens: int = 0
    cached_tokens: int = 0
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    trap: FaultTrap | None = None
    """Records an exception raised by this sequence's sampler or logits processors."""

    @property
    def request(self) -> GenerationRequest:
        return self.stream.request

    def advance(
        self, token: int, logprob: tuple[float, list[tuple[int, float]]] | None,
        finish_reason: str | None,
    ) -> tuple[GenerationOutput | None, bool]:
        """Take one generated token; return (output to send or None, stopped by a stop string).

        ``finish_reason`` is the batch generator's: "stop" for an end-of-sequence token (which
        is not part of the text), "length" at ``max_tokens``, else None. With ``ignore_eos``
        the generator does not stop at one: it arrives here as a plain token. Stop strings
        count from the ``min_tokens``-th token on (vLLM's rule).
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
            cached_tokens=self.cached_tokens,
            stop_string=self.stop.matched if stopped else None,
        )
        self.pending_logprobs.clear()
        return output, stopped


def _token_logprob(token: int, logprob: tuple[float, list[tuple[int, float]]],
                   top: int) -> TokenLogprob:
    """The chosen token's log probability and the ``top`` most likely tokens, from the step's
    (value, alternatives best first): under a grammar, those of the masked distribution."""
    value, alternatives = logprob
    if top <= 0:
        return TokenLogprob(token, value)
    # A grammar's mask leaves its refused tokens at -inf: they are no alternatives.
    return TokenLogprob(token, value, tuple((int(i), float(v)) for i, v in alternatives[:top]
                                            if v != -math.inf))
