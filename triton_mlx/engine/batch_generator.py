"""How the engine drives its generator (mlx-lm 0.32's ``BatchGenerator`` over our
``DecodeBatch``): build, warm up, insert.

Each sequence of the batch carries its own ``RowSettings``: its sampler (None for greedy, which
the batch samples with one argmax, and for unseeded sampling, drawn with its like), logit bias,
penalties, ``min_tokens`` and stop tokens: the model's end-of-sequence tokens, or none for
``ignore_eos`` (vLLM's extension: such a sequence runs to ``max_tokens``). Its own code (a
seeded sampler, logits processors) is wrapped in a ``FaultTrap`` so its failure stays its own.
A request with a ``grammar`` is registered with the generator (``grammar_batch``), which masks
all its constrained rows in one operation per step; the grammar then decides where the text
ends: ``ignore_eos`` does not apply, and the grammar handles ``min_tokens``. A matcher's error
goes to the sequence's ``FaultTrap``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import greedy_sampler

from triton_mlx.engine import sampling
from triton_mlx.engine.constraints import GrammarCache
from triton_mlx.engine.fault_trap import FaultTrap
from triton_mlx.engine.grammar_batch import ConstrainedGenerator
from triton_mlx.engine.step_plan import RowSettings
from triton_mlx.engine.types import GenerationRequest


def new_generator(model: Any, eos_ids: list[int], slots: int, prefill_step_size: int,
                  stream: Any, pad_prompts: bool = False, fold_first: bool = False,
                  lone_step: Any = None) -> ConstrainedGenerator:
    """A generator that decodes up to ``slots`` sequences at once and prefills prompts in
    chunks of ``prefill_step_size`` tokens between decode steps; ``pad_prompts``: to the
    lengths of ``prompt_shapes`` (on CUDA); ``fold_first``: a prompt's first token sampled
    from its last prefill pass (``last_positions``); ``lone_step``: a lone sequence's decode
    step from compiled pieces (``lone_step.build``)."""
    return ConstrainedGenerator(
        model,
        eos_ids=eos_ids,
        pad_prompts=pad_prompts,
        fold_first=fold_first,
        lone_step=lone_step,
        stop_tokens=[[t] for t in eos_ids],
        completion_batch_size=slots,
        prefill_batch_size=slots,
        prefill_step_size=prefill_step_size,
        stream=stream,
    )


def warm_up(generator: ConstrainedGenerator, prompt: list[int], batch_sizes: int,
            prompt_lengths: Sequence[int] = ()) -> None:
    """Run two-token generations of ``prompt`` at each batch size up to ``batch_sizes``, then
    of a lone prompt of each of ``prompt_lengths`` tokens, so that no request pays for kernel
    compilation, first allocations or a matrix shape's first use."""
    runs = [[prompt] * size for size in range(1, batch_sizes + 1)]
    for length in prompt_lengths:  # prefilled: the prompt, or all but its last token
        folded = generator.fold_first and length < generator.prefill_step_size
        runs.append([(prompt * (length + 1))[:length if folded else length + 1]])
    for prompts in runs:
        uids = set(generator.insert(prompts, max_tokens=[2] * len(prompts)))
        while uids:
            _, responses = generator.next()
            uids -= {r.uid for r in responses if r.finish_reason}


def insert(generator: ConstrainedGenerator, request: GenerationRequest, cache: list[Any] | None,
           cached: int, vocab_size: int, eos_ids: list[int],
           grammars: GrammarCache) -> tuple[int, FaultTrap]:
    """Add ``request``'s sequence, starting from ``cache`` (holding its first ``cached``
    prompt tokens) when given; returns its uid and the trap that guards its own code."""
    prompt = list(request.prompt_tokens)
    trap = FaultTrap()
    params = request.sampling
    draw = sampling.shared_draw(params, vocab_size)
    sampler = greedy_sampler if draw else sampling.make_sampler(params, vocab_size)
    settings = RowSettings(
        trap=trap,
        sampler=None if sampler is greedy_sampler else trap.sampler(sampler),
        draw=draw,
        logit_bias=dict(params.logit_bias),
        penalties=trap.processors(sampling.make_logits_processors(params)),
        logprobs=request.logprobs,
    )
    constrained = None
    if request.grammar is not None:  # masked after the processors: it sees what they leave
        constrained = grammars.sequence(request.grammar, request.min_tokens,
                                        on_error=trap.record)
    else:
        settings.min_tokens = request.min_tokens
    if not (request.ignore_eos and request.grammar is None):
        settings.stop_tokens = frozenset(eos_ids)
    (uid,) = generator.insert(
        [prompt[cached:]],
        max_tokens=[request.max_tokens],
        caches=[cache] if cache is not None else None,
        all_tokens=[prompt[:cached]],
    )
    generator.register(uid, settings)
    if constrained is not None:
        generator.constrain(uid, constrained)
    return uid, trap


def prompt_cache_to_fork(generator: ConstrainedGenerator, uid: int,
                         prompt_length: int) -> tuple[list[Any], int] | None:
    """The cache of sequence ``uid`` cut to its prompt less the last token (which each
    sibling feeds itself to sample its own first token), and the tokens it holds; cut by the
    prompt's length, whatever the cache holds beyond it. None when it cannot be trimmed, or
    when the sequence has left the batch already (it ended at its first token, read at once
    in the step that took it past its prompt: ``DecodeBatch.read_now``)."""
    found = generator.extract_cache([uid]).get(uid)
    if found is None or not can_trim_prompt_cache(found[0]) or prompt_length <= 1:
        return None
    cache = found[0]
    held = cache[0].offset  # tokens fed so far: the prompt, and any decoded since
    trim_prompt_cache(cache, held - (prompt_length - 1))
    return cache, prompt_length - 1


def vocab_size(model: Any) -> int:
    args = getattr(model, "args", None)
    return int(getattr(args, "vocab_size", 0) or model.model.embed_tokens.weight.shape[0])
