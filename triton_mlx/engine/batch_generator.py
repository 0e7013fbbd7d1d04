"""How the engine drives mlx-lm's ``BatchGenerator`` (mlx-lm 0.32): build, warm up, insert.

Each sequence of the batch carries its own sampler and logits processors (``sampling``), each
wrapped in a ``FaultTrap`` so its failure stays its own, and its own stop tokens: the
model's end-of-sequence tokens, or none for ``ignore_eos`` (vLLM's extension: such a
sequence runs to ``max_tokens``). vLLM's ``min_tokens`` adds a processor that masks the
end-of-sequence tokens until then. A request that uses neither takes the plain path: the
generator's shared stop tokens and no extra processor. A request with a ``grammar`` is
registered with the generator (``grammar_batch``), which masks all its constrained rows in one
operation per step; the grammar then decides where the text ends: ``ignore_eos`` does not apply,
and the grammar handles ``min_tokens``. A matcher's error goes to the sequence's ``FaultTrap``.
"""

from __future__ import annotations

from typing import Any

from mlx_lm.generate import StopSequences
from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

from triton_mlx.engine import sampling
from triton_mlx.engine.constraints import GrammarCache
from triton_mlx.engine.fault_trap import FaultTrap
from triton_mlx.engine.grammar_batch import ConstrainedGenerator
from triton_mlx.engine.types import GenerationRequest

_NO_STOP_TOKENS = StopSequences()  # for ignore_eos: no token ends the sequence


def new_generator(model: Any, eos_ids: list[int], slots: int, prefill_step_size: int,
                  stream: Any) -> ConstrainedGenerator:
    """A generator that decodes up to ``slots`` sequences at once and prefills prompts in
    chunks of ``prefill_step_size`` tokens between decode steps."""
    return ConstrainedGenerator(
        model,
        stop_tokens=[[t] for t in eos_ids],
        completion_batch_size=slots,
        prefill_batch_size=slots,
        prefill_step_size=prefill_step_size,
        stream=stream,
    )


def warm_up(generator: ConstrainedGenerator, prompt: list[int], batch_sizes: range) -> None:
    """Run two-token generations of ``prompt`` at each batch size, so no request pays kernel
    compilation or first allocations."""
    for size in batch_sizes:
        uids = set(generator.insert([prompt] * size, max_tokens=[2] * size))
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
    processors = sampling.make_logits_processors(request.sampling, len(prompt))
    constrained = None
    if request.grammar is not None:  # masked after the processors: it sees what they leave
        constrained = grammars.sequence(request.grammar, request.min_tokens,
                                        on_error=lambda exc: _record(trap, exc))
    elif request.min_tokens > 0 and eos_ids:
        processors.append(sampling.suppress_until(eos_ids, request.min_tokens, len(prompt)))
    ignore_eos = request.ignore_eos and request.grammar is None
    (uid,) = generator.insert(
        [prompt[cached:]],
        max_tokens=[request.max_tokens],
        caches=[cache] if cache is not None else None,
        all_tokens=[prompt[:cached]],
        samplers=[trap.sampler(sampling.make_sampler(request.sampling, vocab_size))],
        logits_processors=[trap.processors(processors)],
        stop_sequences=[_NO_STOP_TOKENS] if ignore_eos else None,
    )
    if constrained is not None:
        generator.constrain(uid, constrained)
    return uid, trap


def _record(trap: FaultTrap, error: Exception) -> None:
    """Hand a grammar's error to the sequence's trap (its first error wins)."""
    if trap.error is None:
        trap.error = error


def prompt_cache_to_fork(generator: ConstrainedGenerator, uid: int) -> tuple[list[Any], int] | None:
    """The prompt cache of sequence ``uid`` less its last token, and the tokens it holds: the
    start of each sibling, which samples its own first token from that last prompt token.
    None when the cache cannot be trimmed."""
    cache, tokens = generator.extract_cache([uid])[uid]
    if not can_trim_prompt_cache(cache) or len(tokens) <= 1:
        return None
    trim_prompt_cache(cache, 1)
    return cache, len(tokens) - 1


def vocab_size(model: Any) -> int:
    args = getattr(model, "args", None)
    return int(getattr(args, "vocab_size", 0) or model.model.embed_tokens.weight.shape[0])
