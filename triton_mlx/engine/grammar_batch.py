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

Folding (``fold_first``, on CUDA). mlx-lm prefills a prompt less its last token and feeds that
token in a pass of its own at the next step, to sample the first token from its logits. With
``fold_first`` (``_next_folding``, a copy of mlx-lm's ``_next``) a prompt's last token goes in
with its last prefill chunk when it fits, and ``last_positions`` computes the logits at each
such row's last token alone: the first token is sampled in the step that ends the prefill, one
forward pass and one engine step sooner.
"""

from __future__ import annotations

import copy
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, PromptProcessingBatch

from triton_mlx.engine import batch_caches, last_positions, prompt_shapes
from triton_mlx.engine.constraints import ConstrainedSequence, GrammarMasker
from triton_mlx.engine.decode_batch import DecodeBatch
from triton_mlx.engine.step_plan import RowSettings


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

    def __init__(self, model: Any, *, eos_ids: list[int], pad_prompts: bool = False,
                 fold_first: bool = False, lone_step: Any = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.fold_first = fold_first
        """Sample a prompt's first token from its last prefill pass (``_next_folding``); only
        for a model that ``last_positions.supported`` accepts."""
        self.constraints = Constraints()
        self.settings: dict[int, RowSettings] = {}
        self._prompt_batch = _PromptBatch.empty(
            self.model, self.sampler, prefill_step_size=self.prefill_step_size)
        self._prompt_batch.wire(self.settings, eos_ids, self.constraints, pad_prompts)
        self._generation_batch = DecodeBatch.empty(self.model, self.settings, eos_ids,
                                                   self.constraints, lone_step)

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
        started = len(self._generation_batch) == 0
        if self.fold_first:
            prompt_responses, responses = self._next_folding()
        else:
            prompt_responses, responses = super()._next()
        if started and len(self._generation_batch) > 0:  # a batch begun from nothing
            responses = [*responses, *self._generation_batch.read_now()]
        for response in responses:
            if response.finish_reason is not None:
                self._forget(response.uid)
        return prompt_responses, responses

    def _forget(self, uid: int) -> None:
        self.constraints.by_uid.pop(uid, None)
        self.settings.pop(uid, None)

    def _next_folding(self) -> tuple[list[Any], list[Any]]:
        """mlx-lm 0.32.2's ``_next``, with each prompt's last token fed in its last prefill
        chunk instead of a pass of its own at the next step: the rows whose prompt ends in this
        step's chunk sample their first tokens from the prefill's logits, in this step."""
        prompt_responses: list[Any] = []
        responses: list[Any] = []
        if len(self._generation_batch) > 0:
            responses = self._generation_batch.next()
            self._counters.generation_tokens += len(responses)
            self._counters.generation_steps += 1
            if self._counters.generation_steps % 512 == 0:
                mx.clear_cache()
        if len(self._generation_batch) >= self.completion_batch_size:
            return prompt_responses, responses
        n = min(self.prefill_batch_size - len(self._prompt_batch),
                self.completion_batch_size - len(self._generation_batch),
                len(self._unprocessed_sequences))
        if n > 0:
            self._prompt_batch.extend(self._make_batch(n))
        # A row left with its last token alone (a prompt of one token past its cached prefix)
        # starts as in mlx-lm: that token's pass is the whole prefill.
        alone = [i for i, (segments, *_) in enumerate(self._currently_processing)
                 if len(segments) == 1 and len(segments[0]) == 1]
        if alone:
            last = [self._currently_processing[i][0][0][0] for i in alone]
            prompt_responses += self._start_rows(alone, last, None)
        prompts, folded, last = [], [], []
        for i, sequence in enumerate(self._currently_processing):
            response = PromptProcessingBatch.Response(self._prompt_batch.uids[i], 0, False, False)
            segments = sequence[0]
            take = min(len(segments[0]), self.prefill_step_size)
            chunk, segments[0] = segments[0][:take], segments[0][take:]
            if not segments[0]:
                segments.pop(0)
                response.end_of_segment = True
                if (len(segments) == 1 and len(segments[0]) == 1
                        and take < self.prefill_step_size):  # the last token fits: fold it in
                    chunk = chunk + segments.pop()
                    folded.append(i)
                    last.append(chunk[-1])
                    response.end_of_prompt = True
            prompts.append(chunk)
            sequence[1] += len(chunk)
            response.progress = (sequence[1], sequence[2])
            prompt_responses.append(response)
        self._counters.prompt_tokens += sum(len(p) for p in prompts)
        first_logits = self._prompt_batch.prompt(prompts, last_of=folded)
        if folded:
            self._start_rows(folded, last, first_logits)
        return prompt_responses, responses

    def _start_rows(self, rows: list[int], last: list[int],
                    first_logits: mx.array | None) -> list[Any]:
        """Move prompt-batch rows ``rows`` (ascending) into the decode batch: their last prompt
        tokens ``last`` are still to feed (``first_logits`` None) or were fed with the prefill,
        whose logits at them are ``first_logits``. Returns their end-of-prompt responses."""
        progress = [self._currently_processing[i][2] for i in rows]
        moved = set(rows)
        self._currently_processing = [x for i, x in enumerate(self._currently_processing)
                                      if i not in moved]
        batch = self._prompt_batch.split(rows).decode_from(last, first_logits)
        self._generation_batch.extend(batch)
        return [PromptProcessingBatch.Response(uid, (p, p), True, True)
                for uid, p in zip(batch.uids, progress, strict=True)]


class _PromptBatch(PromptProcessingBatch):
    settings: dict[int, RowSettings]
    eos_ids: list[int]
    constraints: Constraints | None = None
    pad_prompts = False
    """Right-pad each prefill to one of ``prompt_shapes.lengths`` (CUDA: shapes seen before)."""

    def wire(self, settings: dict[int, RowSettings], eos_ids: list[int],
             constraints: Constraints, pad_prompts: bool = False) -> None:
        self.settings, self.eos_ids, self.constraints = settings, eos_ids, constraints
        self.pad_prompts = pad_prompts

    def _copy(self) -> _PromptBatch:
        if not batch_caches.uniform(self.prompt_cache):
            batch = super()._copy()  # deep-copies the caches
        else:  # the layers' arrays are shared until ``split`` filters both sides
            batch = self.__class__.__new__(self.__class__)
            batch.__dict__.update(self.__dict__)
            for name in ("uids", "tokens", "samplers", "logits_processors", "stop_sequences",
                         "max_tokens"):
                setattr(batch, name, list(getattr(self, name)))
            batch.prompt_cache = [copy.copy(c) for c in self.prompt_cache]
        batch.wire(self.settings, self.eos_ids, self.constraints, self.pad_prompts)
        return batch

    def split(self, indices: list[int]) -> _PromptBatch:
        """The rows ``indices`` as a batch of their own, which this one no longer holds."""
        if len(indices) < len(self.uids):
            return super().split(indices)  # ``_copy``, then ``filter`` on both sides
        batch = self._copy()  # the whole batch moves on: nothing to filter
        self.filter([])
        return batch

    def filter(self, keep: list[int]) -> None:
        # mlx-lm 0.32.2's, with one host read for all the layers (``batch_caches``).
        self.uids = [self.uids[i] for i in keep]
        if keep:
            batch_caches.filter_rows(self.prompt_cache, keep)
        else:
            self.prompt_cache = []
        for name in ("tokens", "samplers", "logits_processors", "max_tokens", "stop_sequences"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])

    def prompt(self, tokens: list[list[int]], last_of: list[int] = ()) -> mx.array | None:
        """Prefill ``tokens`` (one list per row) into the rows' caches; for the rows ``last_of``
        also return the logits at their last token (``last_positions``), which must fit one
        chunk of ``prefill_step_size``.

        mlx-lm 0.32.2's, less its host syncs: it evaluates the caches after every chunk and
        after ``finalize`` (waiting for the device each time) and empties MLX's buffer cache
        each time (on CUDA, freeing and then reallocating device memory). Here only the chunks
        before the last are evaluated (to bound the graph of a long prompt); the last is
        queued, and the decode steps queued after it wait for it on the device, not the host.
        The engine empties the buffer cache when it goes idle."""
        if len(self.uids) != len(tokens):
            raise ValueError("The batch length doesn't match the number of inputs")
        if not tokens:
            return None
        for history, new in zip(self.tokens, tokens, strict=True):
            history += new
        lengths = [len(t) for t in tokens]
        longest = max(lengths)
        if self.pad_prompts and batch_caches.uniform(self.prompt_cache):
            longest = prompt_shapes.padded_length(longest, self.prefill_step_size)
        padding = [longest - n for n in lengths]
        if max(padding) > 0:  # right-padded; ``finalize`` moves the padding to the left
            for cache in self.prompt_cache:
                cache.prepare(lengths=lengths, right_padding=padding)
        inputs = mx.array([t + [0] * (longest - len(t)) for t in tokens])
        if last_of and inputs.shape[1] > self.prefill_step_size:
            raise ValueError("rows whose last token is folded in must fit one chunk")
        logits = None
        while inputs.shape[1] > 0:
            step = min(self.prefill_step_size, inputs.shape[1])
            if last_of:  # one chunk (checked above): the positions are the rows' last tokens
                logits = last_positions.logits_at(self.model, inputs, self.prompt_cache,
                                                  list(last_of),
                                                  [lengths[i] - 1 for i in last_of])
            else:
                self.model(inputs[:, :step], cache=self.prompt_cache)
            inputs = inputs[:, step:]
            if inputs.shape[1] > 0:
                mx.eval([c.state for c in self.prompt_cache])
        if max(padding) > 0:
            for cache in self.prompt_cache:
                cache.finalize()
        mx.async_eval([c.state for c in self.prompt_cache])
        return logits

    def generate(self, tokens: list[list[int]]) -> DecodeBatch:
        # mlx-lm 0.32.2's, building a DecodeBatch.
        if any(len(t) > 1 for t in tokens):
            self.prompt([t[:-1] for t in tokens])
        return self.decode_from([t[-1] for t in tokens])

    def decode_from(self, last: list[int], first_logits: mx.array | None = None) -> DecodeBatch:
        """The rows as a decode batch (this one keeps none): its first step feeds the
        prompts' ``last`` tokens, or samples from ``first_logits`` where the prefill fed them."""
        generation = DecodeBatch(
            self.model, self.settings, self.uids, mx.array(last), self.prompt_cache,
            self.tokens, self.max_tokens, eos_ids=self.eos_ids, constraints=self.constraints,
            first_logits=first_logits,
        )
        self.uids = []
        self.prompt_cache = []
        self.tokens = []
        self.samplers = []
        self.logits_processors = []
        self.max_tokens = []
        return generation
