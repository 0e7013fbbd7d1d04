"""Prompts that arrive while the batch is busy are prefilled together, in one forward pass.

Issue 14: prefill of arriving prompts is batched across requests, not done one after another.
The test holds the engine thread inside a decode step (a logits processor of the running
request waits for a signal), submits several requests meanwhile, releases the step, and reads
which prompts each prefill pass carried.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from mlx_lm.utils import load

from tests.engine.steps import collect
from triton_mlx.engine import sampling
from triton_mlx.engine.engine import Engine
from triton_mlx.engine.grammar_batch import _PromptBatch
from triton_mlx.engine.types import GenerationRequest, SamplingParams

NO_EOS = {2: -100.0}
HOLD = SamplingParams(temperature=0.0, logit_bias=NO_EOS, frequency_penalty=0.125)  # marked


@pytest.fixture(scope="module")
def engine(tiny_repository):
    engine = Engine(lambda: load(str(tiny_repository / "tiny")), name="tiny", slots=8,
                    max_queue=8, warmup=False)
    engine.start()
    engine.wait_loaded(60)
    yield engine
    engine.stop()


def test_prompts_arriving_during_a_step_share_one_prefill_pass(engine, monkeypatch):
    in_step = threading.Event()  # the engine thread is inside the held request's step
    release = threading.Event()
    real = sampling.make_logits_processors

    def hold(_tokens, logits):
        if not release.is_set():
            in_step.set()
            release.wait()
        return logits

    monkeypatch.setattr(sampling, "make_logits_processors", lambda params: (
        [*real(params), hold] if params.frequency_penalty == 0.125
        else real(params)))
    passes: list[int] = []  # prompts carried by each prefill forward pass
    real_prompt = _PromptBatch.prompt

    def record(batch, tokens):
        if tokens:
            passes.append(len(tokens))
        return real_prompt(batch, tokens)

    monkeypatch.setattr(_PromptBatch, "prompt", record)
    texts = ["The quick brown fox", "Hello world, how are you", "def add(a, b):",
             "Numbers like 12345", "The capital of France"]

    async def main():
        (held,) = engine.submit(GenerationRequest(engine.tokenizer.encode("Stop here."), 40,
                                                  HOLD))
        await asyncio.to_thread(in_step.wait)
        passes.clear()  # from here on: only the prompts that arrive while the step is held
        streams = [s for text in texts for s in engine.submit(GenerationRequest(
            engine.tokenizer.encode(text), 4, SamplingParams(temperature=0.0,
                                                             logit_bias=NO_EOS)))]
        release.set()
        return await asyncio.gather(collect(held), *(collect(s) for s in streams))

    results = asyncio.run(main())
    assert all(last.completion_tokens == (40 if i == 0 else 4)
               for i, (_, last) in enumerate(results))
    assert passes and passes[0] == len(texts)  # all five prompts in the first pass
