"""The decode half of the batch: one step for every running sequence, lean per step.

Why not mlx-lm's ``GenerationBatch`` (0.32.2) as it is. Its per-step work grows with the batch in
ways a server feels: once any row has a logits processor (the logit bias of every benchmark, say)
every row is sliced out and concatenated back; every row with a sampler of its own is sampled
alone; every row's log probabilities become an array of their own; and a batch of one still pays
for batch caches (per-row offsets and an attention mask), which on a GPU makes a lone stream
0.5-0.7x as fast as mlx-lm's single-sequence ``generate_step``. On MLX's CUDA backend a step is
bound by the host launching its kernels, so every per-row operation costs time. Here:

- logit bias and ``min_tokens`` go on the whole batch in one scatter each, and the penalties
  (frequency, presence, repetition) on all the penalised rows at once (``penalties``: counts
  kept per row, stacked while the batch's rows stay the same); only rows with processors of
  their own are processed row by row;
- greedy rows are sampled with one argmax over the logits, unseeded sampling rows in one draw
  per set of filters (``SharedDraw``: each row at its own temperature); only seeded rows, which
  own their random keys, are sampled one by one;
- log probabilities are computed only for the rows that read them (samplers, logprobs), not
  for the whole batch as mlx-lm does: on a CPU the exponentials of a (64, 49k) batch cost as
  much as a small model's forward pass. The rows that asked for logprobs get their token's
  value and top alternatives in one gather, computed with the step;
- a lone sequence decodes on plain per-layer caches (mlx-lm's ``KVCache``: no mask, scalar
  offsets), which is ``generate_step``'s own path; the caches become batch caches again when
  another sequence joins. Only models whose caches are all ``BatchKVCache`` go lone. Given a
  ``lone_step`` (mlx-lm's Llama and Qwen models; the engine's ``lone_compiled``), a lone
  row's step runs each layer's work between two cache updates as one compiled call.

The step is pipelined as mlx-lm's is: step N+1 is dispatched before step N's tokens are read, so
the host builds the next graph while the device computes. A batch begun from nothing (an idle
engine's first arrivals) reads its first tokens at once instead (``read_now``): one engine step
less to the first token, for one step without that overlap. A batch whose prompts' last tokens
went in with their prefill (``first_logits``: ``grammar_batch``'s folding) samples its first
tokens from that pass's logits instead of a pass of its own. A row's own code (a seeded sampler,
processors of its own) runs under its ``FaultTrap``; a grammar masks its rows through
``Constraints``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import BatchKVCache, KVCache, TokenBuffer

from triton_mlx.engine import batch_caches
from triton_mlx.engine.fault_trap import FaultTrap
from triton_mlx.engine.penalties import PenaltyStack, RowHistory
from triton_mlx.engine.sampling import log_softmax
from triton_mlx.engine.step_plan import RowSettings, StepPlan
from triton_mlx.engine.types import Logprob

_Pending = list[tuple[list[tuple[int, int]], tuple[mx.array, ...]]]
"""Logprob gathers of one step, not yet read: ((uid, top k) per row, (values[, ids, tops]))."""


@dataclass(slots=True)
class Decoded:
    """One row's result of a step: its token, and the sequence's end if it ended."""

    uid: int
    token: int
    finish_reason: str | None
    logprob: Logprob | None = None
    """The token's log probability and the top alternatives, best first (when asked)."""
    prompt_cache: list[Any] | None = None
    all_tokens: list[int] | None = None


class DecodeBatch:
    """The sequences past their prompt, stepped together (mlx-lm's ``GenerationBatch`` role).

    The interface ``BatchGenerator`` uses is kept: ``uids``, ``tokens``, ``prompt_cache``,
    ``extend``, ``filter``, ``extract_cache``, ``next`` and ``len``.
    """

    def __init__(self, model: Any, settings: dict[int, RowSettings], uids: list[int],
                 inputs: mx.array, prompt_cache: list[Any], tokens: list[list[int]],
                 max_tokens: list[int], *, eos_ids: list[int], constraints: Any = None,
                 first_logits: mx.array | None = None, lone_step: Any = None) -> None:
        self.model = model
        self.lone_step = lone_step  # a lone row's step from compiled pieces (``lone_step``)
        self.uids = uids
        self.prompt_cache = prompt_cache
        self.tokens = tokens
        self.max_tokens = max_tokens
        self.constraints = constraints
        self._eos_ids = eos_ids
        # A sequence inserted without settings (the warm-up's) is greedy and stops at EOS.
        self._rows = [settings.get(uid) or RowSettings(FaultTrap(), stop_tokens=frozenset(eos_ids))
                      for uid in uids]
        self._num_tokens = [0] * len(uids)
        self._contexts: list[TokenBuffer | None] = [
            TokenBuffer(t) if row.processors else None
            for row, t in zip(self._rows, tokens, strict=True)]
        self._histories: list[RowHistory | None] = [None] * len(uids)  # made at the first step
        self._stack: PenaltyStack | None = None
        self._next_tokens: mx.array | None = inputs
        self._next_logprobs: _Pending = []
        self._read_ahead = False  # the tokens dispatched last were read already (``read_now``)
        self._lone = False
        self._plan: StepPlan | None = None
        if uids:  # ``first_logits``: the prefill's, its last tokens in cache and in ``tokens``
            self._step(first=True, logits=first_logits)

    @classmethod
    def empty(cls, model: Any, settings: dict[int, RowSettings], eos_ids: list[int],
              constraints: Any = None, lone_step: Any = None) -> DecodeBatch:
        return cls(model, settings, [], mx.array([], dtype=mx.uint32), [], [], [],
                   eos_ids=eos_ids, constraints=constraints, lone_step=lone_step)

    def __len__(self) -> int:
        return len(self.uids)

    # ----- membership -----

    def extend(self, batch: DecodeBatch) -> None:
        """Add ``batch``'s sequences (just past their prompts, first tokens dispatched)."""
        if not batch.uids:
            return
        # Rows join between steps, never between ``read_now`` and the step after it (whose
        # dispatched tokens, already read, it returns none of).
        assert not self._read_ahead, "rows joined a batch whose tokens were read ahead"
        if self._lone:
            self._leave_lone()
        if batch._lone:
            batch._leave_lone()
        self._unstack()
        batch._unstack()
        self.uids.extend(batch.uids)
        if not self.prompt_cache:
            self.prompt_cache = batch.prompt_cache
        else:
            for mine, theirs in zip(self.prompt_cache, batch.prompt_cache, strict=True):
                mine.extend(theirs)
            batch_caches.settle_padding(self.prompt_cache)
        self.tokens.extend(batch.tokens)
        self.max_tokens.extend(batch.max_tokens)
        self._rows.extend(batch._rows)
        self._num_tokens.extend(batch._num_tokens)
        self._contexts.extend(batch._contexts)
        self._histories.extend(batch._histories)
        if self._next_tokens is None or self._next_tokens.size == 0:
            self._next_tokens = batch._next_tokens
        else:
            self._next_tokens = mx.concatenate([self._next_tokens, batch._next_tokens])
        self._next_logprobs.extend(batch._next_logprobs)
        self._plan = None

    def filter(self, keep: list[int]) -> None:
        """Keep only the rows ``keep`` (in that order)."""
        self._unstack()
        self.uids = [self.uids[i] for i in keep]
        if not keep:
            self.prompt_cache.clear()
            self._lone = False
            self._read_ahead = False  # no row left whose tokens were read ahead
        elif not self._lone:
            batch_caches.filter_rows(self.prompt_cache, keep)
        self.tokens = [self.tokens[i] for i in keep]
        self.max_tokens = [self.max_tokens[i] for i in keep]
        self._rows = [self._rows[i] for i in keep]
        self._num_tokens = [self._num_tokens[i] for i in keep]
        self._contexts = [self._contexts[i] for i in keep]
        self._histories = [self._histories[i] for i in keep]
        self._next_tokens = self._next_tokens[mx.array(keep)] if keep else None
        self._plan = None

    def extract_cache(self, idx: int) -> list[Any]:
        """A copy of row ``idx``'s cache, as single-sequence caches; the batch keeps its own."""
        return self._extract_rows([idx])[0]

    def _extract_rows(self, rows: list[int]) -> list[list[Any]]:
        if self._lone:
            return [[_copy_cache(c) for c in self.prompt_cache] for _ in rows]
        return batch_caches.extract_rows(self.prompt_cache, rows)

    def _go_lone(self) -> None:
        """One row left: decode on plain caches, as ``generate_step`` does."""
        self.prompt_cache = batch_caches.extract_rows(self.prompt_cache, [0])[0]
        self._lone = True

    def _leave_lone(self) -> None:
        self.prompt_cache = [BatchKVCache.merge([c]) for c in self.prompt_cache]
        self._lone = False

    def _can_go_lone(self) -> bool:
        return (len(self.uids) == 1 and not self._lone and bool(self.prompt_cache)
                and all(type(c) is BatchKVCache for c in self.prompt_cache))

    # ----- stepping -----

    def next(self) -> list[Decoded]:
        """Dispatch the next step, then return this step's tokens (the one dispatched last
        time), ending the rows that reached ``max_tokens`` or a stop token."""
        if not self.uids:
            return []
        if self._can_go_lone():
            self._go_lone()
        tokens, logprobs = self._step()
        return self._results(tokens, logprobs)

    def read_now(self) -> list[Decoded]:
        """Read the tokens dispatched last without dispatching the next step, for a batch that
        has just started from nothing: its first tokens reach their users a whole engine step
        sooner (time to first token), for the device idling once while the next step is built.
        The next ``next`` dispatches as usual and returns no tokens."""
        if not self.uids or self._read_ahead:
            return []
        if self._can_go_lone():
            self._go_lone()
        inputs, pending = self._next_tokens, self._next_logprobs
        mx.eval(inputs, *(a for _, arrays in pending for a in arrays))
        self._next_logprobs = []
        self._read_ahead = True
        # Not yet in the rows' histories, which hold the tokens fed to the model (the prefix
        # cache and forks take them as the cache's contents): the next step feeds them.
        return self._results(inputs.tolist(), _read_logprobs(pending))

    def _results(self, tokens: list[int], logprobs: dict[int, Logprob]) -> list[Decoded]:
        """Each row's ``Decoded`` for its new token, ending the rows that reached
        ``max_tokens`` or a stop token."""
        results = []
        keep = []
        ended = []
        for i, token in enumerate(tokens):
            row = self._rows[i]
            self._num_tokens[i] += 1
            finish = None
            if token in row.stop_tokens:
                finish = "stop"
            elif self._num_tokens[i] >= self.max_tokens[i]:
                finish = "length"
            uid = self.uids[i]
            result = Decoded(uid, token, finish, logprobs.get(uid) if logprobs else None)
            if finish is not None:
                result.all_tokens = self.tokens[i]
                ended.append((i, result))
            else:
                keep.append(i)
            results.append(result)
        if ended:
            caches = self._extract_rows([i for i, _ in ended])
            for (_, result), cache in zip(ended, caches, strict=True):
                result.prompt_cache = cache
            self.filter(keep)
        return results

    def _step(self, first: bool = False, logits: mx.array | None = None,
              ) -> tuple[list[int], dict[int, Logprob]]:
        """Dispatch the next tokens' computation; read the ones dispatched last time. A row's
        first step (``first``) samples its first token, from ``logits`` when the prefill
        computed them (folded: the prompts' last tokens were fed already); later ones, with one
        token sampled and not yet read."""
        inputs = self._next_tokens
        pending_logprobs = self._next_logprobs
        plan = self._plan = self._plan or StepPlan(self._rows, self._eos_ids)

        folded = logits is not None
        if not folded:
            step = self.lone_step if self._lone else None
            logits = (step(inputs[:, None], self.prompt_cache) if step is not None
                      else self.model(inputs[:, None], cache=self.prompt_cache)[:, -1, :])
        unread = 0 if first or self._read_ahead else 1  # tokens sampled, not yet counted
        logits, changed = self._process(plan, inputs, logits, unread, generated=not first,
                                        fed=not folded)
        if self.constraints is not None:  # the one grammar mask of the step
            logits = self.constraints.apply(self.uids, inputs, logits)
        sampled = self._sample(plan, logits)

        self._next_tokens = sampled
        self._next_logprobs = self._logprob_rows(plan, logits, sampled)
        mx.async_eval(sampled, *changed, *(a for _, arrays in self._next_logprobs
                                             for a in arrays))
        mx.eval(inputs, *(a for _, arrays in pending_logprobs for a in arrays))
        tokens = inputs.tolist()
        if not folded:
            for history, token in zip(self.tokens, tokens, strict=True):
                history.append(token)
        if self._read_ahead:  # ``read_now`` returned this step's inputs already
            self._read_ahead = False
            return [], {}
        return tokens, _read_logprobs(pending_logprobs)

    def _process(self, plan: StepPlan, inputs: mx.array, logits: mx.array, unread: int,
                 generated: bool, fed: bool = True) -> tuple[mx.array, list[mx.array]]:
        """Logit bias, penalties, rows' own processors and ``min_tokens`` on the batch's logits
        (``unread``: tokens each row has sampled that ``next`` has not counted yet;
        ``generated``: the inputs are generated tokens, not a prompt's last; ``fed``: they are
        new to the rows' histories, not fed with the prefill); also the token histories this
        step changes, to evaluate with it."""
        if plan.bias is not None:
            rows, ids, values = plan.bias
            logits = logits.at[rows, ids].add(values.astype(logits.dtype))
        changed = []
        if plan.stacked_rows:
            stack = self._penalty_stack(plan, logits.shape[-1])
            whole = len(plan.stacked_rows) == len(self.uids)
            if fed:
                stack.record(inputs if whole else inputs[plan.stacked_index],
                             generated=generated)
            if whole:
                logits = stack.apply(logits)
            else:
                logits[plan.stacked_index] = stack.apply(logits[plan.stacked_index])
            changed += stack.arrays()
        if plan.processor_rows:
            processed = []
            for i in plan.processor_rows:
                context = self._contexts[i]
                context = (context.update_and_fetch(inputs[i : i + 1]) if fed
                           else context.tokens)
                changed.append(context)
                row = logits[i : i + 1]
                for processor in self._rows[i].processors:
                    row = processor(context, row)
                processed.append(row)
            logits[plan.processor_index] = mx.concatenate(processed, axis=0)
        if plan.min_rows and self._eos_ids:
            held = [i for i in plan.min_rows
                    if self._num_tokens[i] + unread < self._rows[i].min_tokens]
            if held:
                rows = mx.array([i for i in held for _ in self._eos_ids])
                ids = mx.array(self._eos_ids * len(held))
                logits = logits.at[rows, ids].add(-mx.inf)
        return logits, changed

    def _penalty_stack(self, plan: StepPlan, vocab_size: int) -> PenaltyStack:
        """The penalised rows' counts, stacked once per batch membership; a row's own are
        made at its first step (its prompt's tokens are the ones seen so far)."""
        if self._stack is None:
            for i in plan.stacked_rows:
                if self._histories[i] is None:
                    self._histories[i] = RowHistory(self._rows[i].stacked, self.tokens[i],
                                                    vocab_size)
            self._stack = PenaltyStack([self._histories[i] for i in plan.stacked_rows])
        return self._stack

    def _unstack(self) -> None:
        """Before the rows change: each penalised row takes its counts back."""
        if self._stack is not None:
            self._stack.unstack()
            self._stack = None

    def _sample(self, plan: StepPlan, logits: mx.array) -> mx.array:
        """Greedy rows in one argmax over the logits, unseeded rows in one draw per set of
        filters, rows with a sampler of their own one by one, each given its row's log
        probabilities (mlx-lm's samplers take those)."""
        whole = len(self.uids)
        if len(plan.draws) == 1 and len(plan.draws[0].rows) == whole:
            return plan.draws[0].draw(logits)  # every row draws alike: no argmax to overwrite
        if plan.sampled_rows and len(plan.sampled_rows) == whole:
            return self._own(plan, log_softmax(logits))
        sampled = mx.argmax(logits, axis=-1)
        for group in plan.draws:
            sampled[group.index] = group.draw(logits[group.index]).astype(sampled.dtype)
        if plan.sampled_rows:
            own = self._own(plan, log_softmax(logits[plan.sampled_index]))
            sampled[plan.sampled_index] = own.astype(sampled.dtype)
        return sampled

    def _own(self, plan: StepPlan, logprobs: mx.array) -> mx.array:
        """The seeded rows' draws, each by its own sampler (``logprobs``: theirs, in order)."""
        return mx.concatenate([self._rows[i].sampler(logprobs[j : j + 1])
                               for j, i in enumerate(plan.sampled_rows)], axis=0)

    def _logprob_rows(self, plan: StepPlan, logits: mx.array,
                      sampled: mx.array) -> _Pending:
        """For the rows that asked: the sampled token's log probability and the top ones."""
        if not plan.logprob_rows:
            return []
        index = plan.logprob_index
        rows = log_softmax(logits[index])
        chosen = mx.take_along_axis(rows, sampled[index][:, None], axis=-1)[:, 0]
        uids = [(self.uids[i], self._rows[i].logprobs or 0) for i in plan.logprob_rows]
        if plan.top == 0:
            return [(uids, (chosen,))]
        ids = mx.argpartition(-rows, kth=plan.top - 1, axis=-1)[:, : plan.top]
        return [(uids, (chosen, ids, mx.take_along_axis(rows, ids, axis=-1)))]


def _read_logprobs(
    pending: _Pending,
) -> dict[int, Logprob]:
    """uid -> (log probability, its ``k`` top alternatives best first) from evaluated
    gathers of (uid, k) rows."""
    found = {}
    for rows, arrays in pending:
        chosen = arrays[0].tolist()
        if len(arrays) == 1:
            found.update((uid, (value, [])) for (uid, _), value in zip(rows, chosen, strict=True))
            continue
        ids, values = arrays[1].tolist(), arrays[2].tolist()
        for (uid, k), value, row_ids, row_values in zip(rows, chosen, ids, values, strict=True):
            top = sorted(zip(row_ids, row_values, strict=True), key=lambda p: -p[1])
            found[uid] = (value, top[:k])
    return found


def _copy_cache(cache: KVCache) -> KVCache:
    """An independent copy of a lone sequence's plain cache (what it holds, no spare room)."""
    out = KVCache()
    if cache.keys is not None:
        out.keys = mx.contiguous(cache.keys[..., : cache.offset, :])
        out.values = mx.contiguous(cache.values[..., : cache.offset, :])
        out.offset = cache.offset
    return out
