"""mlx-lm's ``BatchGenerator`` with one grammar-mask operation per decode step.

Why. mlx-lm (0.32) applies logits processors row by row: once any row of the batch has one, it
slices out and concatenates every row, and a grammar as a per-row processor also filled and
applied its own mask. Here the rows under a grammar have no processor for it: between the
forward pass and sampling, ``GrammarMasker`` masks all of them in one operation (its matchers
fill their masks on a worker thread while this thread dispatches the forward pass), and a batch
without any grammar runs mlx-lm's step as it is. Each constrained sequence is registered by uid
(``ConstrainedGenerator.constrain``), so rows that join or leave the batch, whatever order the
batch keeps them in, always meet their own matcher; the generator forgets a sequence when it
finishes or is removed.

What is overridden (mlx-lm 0.32.2; check on upgrade). ``GenerationBatch._step`` is copied with
one call added after the per-row processors (the grammar then sees the logits they leave, as
before). ``PromptProcessingBatch.generate`` is copied to build that generation batch, which
samples each sequence's first token in its constructor (so the first token is masked too), and
``_copy`` to carry the registry into the batches it splits off. ``BatchGenerator.__init__``
swaps in these two batch classes, and ``_next`` and ``remove`` drop finished sequences.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, GenerationBatch, PromptProcessingBatch

from triton_mlx.engine.constraints import ConstrainedSequence, GrammarMasker


class Constraints:
    """The constrained sequences of one generator, by uid, and the masker they share."""

    def __init__(self) -> None:
        self.by_uid: dict[int, ConstrainedSequence] = {}
        self.masker = GrammarMasker()

    def apply(self, uids: list[int], inputs: mx.array, logits: mx.array) -> mx.array:
        """``logits`` of the batch rows ``uids`` under their grammars, if any has one.

        The forward pass (``logits``, not yet evaluated) is dispatched while the masker's
        worker fills the masks: the host does both at once.
        """
        if not self.by_uid:
            return logits
        rows = [(i, s) for i, uid in enumerate(uids) if (s := self.by_uid.get(uid)) is not None]
        if not rows:
            return logits
        pending = self.masker.start(inputs, rows, logits.shape[-1])
        mx.async_eval(logits)
        return self.masker.mask(logits, pending)


class ConstrainedGenerator(BatchGenerator):
    """A ``BatchGenerator`` whose sequences may each carry a grammar."""

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.constraints = Constraints()
        self._prompt_batch = _PromptBatch.empty(
            self.model, self.sampler, prefill_step_size=self.prefill_step_size)
        self._prompt_batch.constraints = self.constraints
        self._generation_batch = _GenerationBatch.empty(self.model, self.sampler)
        self._generation_batch.constraints = self.constraints

    def constrain(self, uid: int, sequence: ConstrainedSequence) -> None:
        """Keep sequence ``uid`` (just inserted) inside ``sequence``'s grammar."""
        self.constraints.by_uid[uid] = sequence

    def remove(self, uids: Any, return_prompt_caches: bool = False) -> Any:
        for uid in uids:
            self.constraints.by_uid.pop(uid, None)
        return super().remove(uids, return_prompt_caches)

    def _next(self) -> Any:
        prompt_responses, responses = super()._next()
        for response in responses:
            if response.finish_reason is not None:
                self.constraints.by_uid.pop(response.uid, None)
        return prompt_responses, responses


class _PromptBatch(PromptProcessingBatch):
    constraints: Constraints | None = None

    def _copy(self) -> _PromptBatch:
        batch = super()._copy()
        batch.constraints = self.constraints
        return batch

    def generate(self, tokens: list[list[int]]) -> _GenerationBatch:
        # mlx-lm 0.32.2's, building a _GenerationBatch.
        if any(len(t) > 1 for t in tokens):
            self.prompt([t[:-1] for t in tokens])
        last_token = mx.array([t[-1] for t in tokens])
        generation = _GenerationBatch(
            self.model, self.uids, last_token, self.prompt_cache, self.tokens, self.samplers,
            self.fallback_sampler, self.logits_processors, self.stop_sequences,
            self.max_tokens, constraints=self.constraints,
        )
        self.uids = []
        self.prompt_cache = []
        self.tokens = []
        self.samplers = []
        self.logits_processors = []
        self.max_tokens = []
        return generation


class _GenerationBatch(GenerationBatch):
    def __init__(self, *args: Any, constraints: Constraints | None = None,
                 **kwargs: Any) -> None:
        self.constraints = constraints  # before the first step, which the constructor runs
        super().__init__(*args, **kwargs)

    def _step(self) -> tuple[list[int], list[mx.array]]:
        # mlx-lm 0.32.2's GenerationBatch._step, with the grammar mask added (marked).
        self._current_tokens = self._next_tokens
        self._current_logprobs = self._next_logprobs
        inputs = self._current_tokens

        logits = self.model(inputs[:, None], cache=self.prompt_cache)
        logits = logits[:, -1, :]

        token_context = []
        if any(self.logits_processors):
            processed_logits = []
            for e in range(len(self.uids)):
                sample_logits = logits[e : e + 1]
                processors = self.logits_processors[e] or ()
                if processors:
                    context = self._token_context[e].update_and_fetch(inputs[e : e + 1])
                    token_context.append(context)
                    for processor in processors:
                        sample_logits = processor(context, sample_logits)
                processed_logits.append(sample_logits)
            logits = mx.concatenate(processed_logits, axis=0)

        if self.constraints is not None:  # triton-mlx: the one grammar mask of the step
            logits = self.constraints.apply(self.uids, inputs, logits)

        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)

        samplers = [
            self.fallback_sampler if s is None else s
            for s in (self.samplers or [None] * len(self.uids))
        ]
        if not samplers or all(s is samplers[0] for s in samplers):
            sampled = (samplers[0] if samplers else self.fallback_sampler)(logprobs)
        else:
            sampled = mx.concatenate(
                [s(logprobs[e : e + 1]) for e, s in enumerate(samplers)], axis=0
            )

        self._next_tokens = sampled
        self._next_logprobs = list(logprobs)
        mx.async_eval(self._next_tokens, self._next_logprobs, token_context)

        mx.eval(inputs, self._current_logprobs)
        inputs = inputs.tolist()
        for sti, ti in zip(self.tokens, inputs, strict=False):
            sti.append(ti)
        return inputs, self._current_logprobs
