"""A lone sequence's decode step from compiled pieces (``lone_step``), against the model's own
step: the same tokens and log probabilities alone, joined and alone again; used only where the
model is mlx-lm's Llama (the tiny model is one: Mistral runs on mlx-lm's ``llama``)."""

from __future__ import annotations

import asyncio
import math

import mlx.core as mx
import pytest
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load

from tests.engine.steps import collect
from tests.engine.test_decode_batch import EOS, insert, request, run
from triton_mlx.engine import batch_generator, lone_step
from triton_mlx.engine.engine import Engine
from triton_mlx.engine.types import GenerationRequest, SamplingParams


@pytest.fixture(scope="module")
def loaded(tiny_repository):
    return load(str(tiny_repository / "tiny"))


@pytest.fixture(scope="module")
def step(loaded):
    built = lone_step.build(loaded[0])
    assert built is not None
    return built


def generator(model, step=None):
    return batch_generator.new_generator(model, [EOS], 8, 64, mx.default_stream(mx.cpu),
                                         lone_step=step)


def decode(model, tokenizer, step):
    """A sequence alone, then joined by a second one mid-way, then alone again (the second
    ends first); then a third alone, sampled with a seed and reading log probabilities."""
    gen = generator(model, step)
    first = insert(gen, model, tokenizer, request(tokenizer, "Hello world", 24, logprobs=2))
    got: dict[int, list] = {first: []}
    for _ in range(5):
        for r in gen.next()[1]:
            got[r.uid].append((r.token, r.logprob))
    second = insert(gen, model, tokenizer, request(tokenizer, "The quick brown fox", 6))
    more, _ = run(gen, [first, second])
    seeded = SamplingParams(temperature=0.8, seed=5, logit_bias={EOS: -100.0})
    third = insert(gen, model, tokenizer, request(tokenizer, "Once upon", 12, seeded,
                                                  logprobs=1))
    last, _ = run(gen, [third])
    return [got[first] + more[first], more[second], last[third]]


def test_a_lone_row_decodes_as_with_the_models_own_step(loaded, step, monkeypatch):
    model, tokenizer = loaded
    calls = []
    real = lone_step.LoneStep.__call__
    monkeypatch.setattr(lone_step.LoneStep, "__call__",
                        lambda self, *args: calls.append(1) or real(self, *args))
    compiled = decode(model, tokenizer, step)
    assert calls  # the lone stretches did run the compiled step
    used = len(calls)
    stock = decode(model, tokenizer, None)
    assert len(calls) == used  # and the stock generator never does
    for rows, want in zip(compiled, stock, strict=True):
        assert [t for t, _ in rows] == [t for t, _ in want]
        for (_, logprob), (_, expected) in zip(rows, want, strict=True):
            assert (logprob is None) == (expected is None)
            if logprob is not None:
                assert math.isclose(logprob[0], expected[0], abs_tol=1e-4)
                assert [i for i, _ in logprob[1]] == [i for i, _ in expected[1]]


def both_ways(model, tokenizer, step, steps):
    """(the model's own logits, the compiled step's) for ``steps`` greedy steps after a prompt,
    each on a cache of its own; asserts the caches move on alike."""
    prompt = mx.array([tokenizer.encode("The capital of France is")])
    caches = [make_prompt_cache(model), make_prompt_cache(model)]
    for cache in caches:
        model(prompt, cache=cache)
    token = mx.array([[42]])
    for _ in range(steps):
        own = model(token, cache=caches[0])[:, -1, :]
        yield own, step(token, caches[1])
        assert caches[0][0].offset == caches[1][0].offset
        token = mx.argmax(own, axis=-1)[:, None]


def test_the_compiled_step_gives_the_models_logits(loaded, step):
    for own, fast in both_ways(*loaded, step, 3):
        assert mx.allclose(own, fast, atol=1e-4).item()


class _NotLlama:
    """Anything that is not exactly mlx-lm's Llama keeps the model's own step."""

    def __init__(self, model):
        self.model, self.args = model.model, model.args


def test_only_mlx_lm_llama_models_get_a_compiled_step(loaded, monkeypatch):
    model, _ = loaded
    assert lone_step.build(model) is not None
    assert lone_step.build(_NotLlama(model)) is None
    layer = model.model.layers[0]
    monkeypatch.setattr(layer.self_attn, "q_proj", _Wrapped(layer.self_attn.q_proj))
    assert lone_step.build(model) is None  # e.g. a split model's sharded linear layers


class _Wrapped:
    def __init__(self, inner):
        self.inner = inner

    def __call__(self, x):
        return self.inner(x)


def test_an_engine_with_the_compiled_step_streams_the_same_text(tiny_repository):
    texts = []
    for compiled in (True, False):
        engine = Engine(lambda: load(str(tiny_repository / "tiny")), name="tiny", slots=2,
                        max_queue=2, lone_compiled=compiled)
        engine.start()
        engine.wait_loaded(60)
        try:
            assert (engine._lone_step is not None) is compiled

            async def main(engine=engine):
                (stream,) = engine.submit(GenerationRequest(
                    engine.tokenizer.encode("Tell me a story"), 40,
                    SamplingParams(temperature=0.0, logit_bias={EOS: -100.0})))
                return await collect(stream)

            text, last = asyncio.run(main())
            assert last.completion_tokens == 40
            texts.append(text)
        finally:
            engine.stop()
    assert texts[0] == texts[1]


@pytest.mark.parametrize("form", ["bfloat16", "4-bit"])
def test_bfloat16_and_quantized_llamas_step_alike(tiny_repository, form):
    """What users serve: half-precision weights, and 4-bit ones (``QuantizedLinear``); on this
    CPU the compiled step's tokens and logits are the model's own."""
    import mlx.nn as nn

    model, tokenizer = load(str(tiny_repository / "tiny"))
    if form == "bfloat16":
        model.set_dtype(mx.bfloat16)
    else:
        nn.quantize(model, group_size=32, bits=4)
    step = lone_step.build(model)
    assert step is not None
    for own, fast in both_ways(model, tokenizer, step, 20):
        assert mx.array_equal(mx.argmax(own, axis=-1), mx.argmax(fast, axis=-1)).item()
        assert mx.allclose(own.astype(mx.float32), fast.astype(mx.float32), atol=1e-2).item()


@pytest.mark.parametrize(("family", "compiled"), [
    ("llama", True), ("mistral", True), ("qwen2", True), ("qwen3", True),
    ("phi3", False), ("gemma3", False), ("mixtral", False),
])
def test_which_families_get_the_compiled_step(tmp_path, family, compiled):
    """Llama, Mistral, Qwen2 and Qwen3 step alike compiled or not; other families (their own
    layers, sliding windows, experts) keep the model's own step."""
    from tests.tiny_families import build_family_model

    model, tokenizer = load(str(build_family_model(tmp_path / family, family)))
    step = lone_step.build(model)
    assert (step is not None) is compiled
    if step is not None:
        for own, fast in both_ways(model, tokenizer, step, 8):
            assert mx.array_equal(mx.argmax(own, axis=-1), mx.argmax(fast, axis=-1)).item()
            assert mx.allclose(own, fast, atol=1e-4).item()


def test_a_pipeline_split_keeps_the_models_own_step(tiny_repository):
    """A pipeline rank holds some of the layers and passes activations in its own step."""
    model, _ = load(str(tiny_repository / "tiny"))
    model.model.pipeline_size = 2
    assert lone_step.build(model) is None
