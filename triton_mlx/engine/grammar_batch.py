"""mlx-lm's ``BatchGenerator`` with our decode batch and one grammar-mask operation per step.

mlx-lm (0.32) schedules: prompts are prefilled in chunks by its ``PromptProcessingBatch`` and,
once past their prompts, join the decode batch. The decode batch here is ours
(``decode_batch.DecodeBatch``: batched logit bias, one argmax, lone sequences on plain caches).
Each sequence's settings (sampler, bias, penalties, stop tokens, logprobs) are registered by uid
(``ConstrainedGenerator.register``) right after ``insert``, and its grammar, if any, too
(``constrain``), so rows that join or leave the batch, whatever order the batch keeps them in,
always meet their own settings; the generator forgets a sequence when it finishes or is removed.

Grammars. Between the forward pass and sampling, ``GrammarMasker`` masks every constrained row
in one operation (its matchers fill their masks on a worker thread while this thread dispatches
the forward pass); a batch without any grammar skips it.

What is overridden (mlx-lm 0.32.2; check on upgrade). ``PromptProcessingBatch.generate`` is
copied to build a ``DecodeBatch`` (whose constructor samples each sequence's first token, so the
first token is masked too), and ``_copy`` to carry the registries into the batches it splits off.
``BatchGenerator.__init__`` swaps in these two batch classes, and ``_next`` and ``remove``
forget finished sequences.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, PromptProcessingBatch

from triton_mlx.engine.constraints import ConstrainedSequence, GrammarMasker
from triton_mlx.engine.decode_batch import DecodeBatch, RowSettings


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
    """A ``BatchGenerator`` over ``DecodeBatch``, whose sequences may each carry a grammar."""

    def __init__(self, model: Any, *, eos_ids: list[int], **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.constraints = Constraints()
        self.settings: dict[int, RowSettings] = {}
        self._prompt_batch = _PromptBatch.empty(
            self.model, self.sampler, prefill_step_size=self.prefill_step_size)
        self._prompt_batch.wire(self.settings, eos_ids, self.constraints)
        self._generation_batch = DecodeBatch.empty(self.model, self.settings, eos_ids,
                                                   self.constraints)

    def register(self, uid: int, settings: RowSettings) -> None:
        """Sequence ``uid`` (just inserted) decodes with ``settings``."""
        self.settings[uid] = settings

    def constrain(self, uid: int, sequence: ConstrainedSequence) -> None:
        """Keep sequence ``uid`` (just inserted) inside ``sequence``'s grammar."""
        self.constraints.by_uid[uid] = sequence

    def remove(self, uids: Any, return_prompt_caches: bool = False) -> Any:
        caches = super().remove(uids, return_prompt_caches)
        for uid in uids:
            self._forget(uid)
        return caches

    def _next(self) -> Any:
        prompt_responses, responses = super()._next()
        for response in responses:
            if response.finish_reason is not None:
                self._forget(response.uid)
        return prompt_responses, responses

    def _forget(self, uid: int) -> None:
        self.constraints.by_uid.pop(uid, None)
        self.settings.pop(uid, None)


class _PromptBatch(PromptProcessingBatch):
    settings: dict[int, RowSettings]
    eos_ids: list[int]
    constraints: Constraints | None = None

    def wire(self, settings: dict[int, RowSettings], eos_ids: list[int],
             constraints: Constraints) -> None:
        self.settings, self.eos_ids, self.constraints = settings, eos_ids, constraints

    def _copy(self) -> _PromptBatch:
        batch = super()._copy()
        batch.wire(self.settings, self.eos_ids, self.constraints)
        return batch

    def generate(self, tokens: list[list[int]]) -> DecodeBatch:
        # mlx-lm 0.32.2's, building a DecodeBatch.
        if any(len(t) > 1 for t in tokens):
            self.prompt([t[:-1] for t in tokens])
        last_token = mx.array([t[-1] for t in tokens])
        generation = DecodeBatch(
            self.model, self.settings, self.uids, last_token, self.prompt_cache, self.tokens,
            self.max_tokens, eos_ids=self.eos_ids, constraints=self.constraints,
        )
        self.uids = []
        self.prompt_cache = []
        self.tokens = []
        self.samplers = []
        self.logits_processors = []
        self.max_tokens = []
        return generation
