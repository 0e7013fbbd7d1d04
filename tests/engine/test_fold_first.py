"""A prompt's first token sampled from its last prefill pass (``fold_first``), against the
generator that feeds the prompt's last token in a pass of its own (mlx-lm's way, the default on
the CPU): the same tokens and log probabilities for every kind of row, one engine step less to
the first token, and the model check that decides whether a model may fold at all.
"""

from __future__ import annotations

import asyncio
import math

import llguidance
import mlx.core as mx
import pytest
from mlx_lm.utils import load

from tests.engine.steps import at_each_processor_call, collect
from tests.engine.test_decode_batch import EOS, GREEDY, alone, insert, request, run
from triton_mlx.engine import batch_generator, last_positions
from triton_mlx.engine.engine import Engine
from triton_mlx.engine.types import GenerationRequest, SamplingParams

CHUNK = 64  # prefill chunk: prompts of 64 and 100 tokens fold, 65 and 129 cannot (see below)
CODE = llguidance.LLMatcher.grammar_from_regex("[0-9]{3}-[a-z]{2}")


@pytest.fixture(scope="module")
def loaded(tiny_repository):
    return load(str(tiny_repository / "tiny"))


def generator(model, fold, pad=False):
    return batch_generator.new_generator(model, [EOS], 8, CHUNK, mx.default_stream(mx.cpu),
                                         pad_prompts=pad, fold_first=fold)


def prompt_of(tokenizer, length):
    words = tokenizer.encode(" ".join(f"w{i} the quick brown fox" for i in range(length)))
    return words[:length]


def requests(tokenizer):
    penalised = SamplingParams(temperature=0.0, repetition_penalty=1.3, frequency_penalty=0.5)
    seeded = SamplingParams(temperature=0.8, seed=3, logit_bias={EOS: -100.0})
    held = SamplingParams(temperature=0.0, logit_bias={EOS: 100.0})
    # A prompt of L tokens prefills L-1, then its last: L-1 < CHUNK folds the last into the
    # chunk (64 tokens: one pass of a whole chunk; 100: a chunk of 64, then 36 with the
    # last); L-1 = CHUNK (65) or a multiple of it (129) leaves the last to a pass of its own.
    return [
        request(tokenizer, "Hello world", 8, logprobs=2),
        GenerationRequest(prompt_of(tokenizer, 64), 8, penalised, logprobs=0),
        GenerationRequest(prompt_of(tokenizer, 65), 8, seeded),
        GenerationRequest(prompt_of(tokenizer, 100), 8, held, min_tokens=3),
        GenerationRequest(prompt_of(tokenizer, 129), 6, GREEDY, logprobs=1),
        request(tokenizer, "The code is", 12, GREEDY, grammar=CODE),
    ]


def decode(model, tokenizer, fold, pad=False, join_after=0):
    """Each request's (token, logprob) list and finish reason; with ``join_after``, the last
    three join a batch that has run that many steps."""
    gen = generator(model, fold, pad)
    todo = requests(tokenizer)
    early, late = (todo[:3], todo[3:]) if join_after else (todo, [])
    uids = [insert(gen, model, tokenizer, r) for r in early]
    before: dict[int, list] = {uid: [] for uid in uids}
    for _ in range(join_after):
        for r in gen.next()[1]:
            before[r.uid].append((r.token, r.logprob))
    uids += [insert(gen, model, tokenizer, r) for r in late]
    got, finish = run(gen, uids)
    return [(before.get(u, []) + got[u], finish[u]) for u in uids]


def assert_same(folded, unfolded):
    for (tokens, finish), (want, want_finish) in zip(folded, unfolded, strict=True):
        assert finish == want_finish
        assert [t for t, _ in tokens] == [t for t, _ in want]
        for (_, logprob), (_, want_logprob) in zip(tokens, want, strict=True):
            if want_logprob is None:
                assert logprob is None
                continue
            assert math.isclose(logprob[0], want_logprob[0], abs_tol=1e-4)
            assert [i for i, _ in logprob[1]] == [i for i, _ in want_logprob[1]]


@pytest.mark.parametrize("pad", [False, True])
def test_folded_rows_decode_as_unfolded_ones(loaded, pad):
    """Greedy, penalised, seeded, ``min_tokens``, grammar and logprobs rows, prompts that fold
    and prompts that cannot, all in one batch: tokens and log probabilities are the same."""
    model, tokenizer = loaded
    folded = decode(model, tokenizer, fold=True, pad=pad)
    assert_same(folded, decode(model, tokenizer, fold=False, pad=pad))
    assert [t for t, _ in folded[3][0]][3:] == [EOS]  # min_tokens held EOS back to the 4th
    assert all(t.isdigit() for t in tokenizer.decode([t for t, _ in folded[5][0]])[:3])


def test_rows_folded_into_a_running_batch_decode_as_unfolded_ones(loaded):
    model, tokenizer = loaded
    assert_same(decode(model, tokenizer, fold=True, join_after=3),
                decode(model, tokenizer, fold=False, join_after=3))


def test_a_rows_own_processors_see_the_same_tokens_folded_or_not(loaded, monkeypatch):
    """A processor with the row's tokens so far (``TokenBuffer``) sees the whole prompt at the
    first token either way: fed with the prefill, or by the first decode step."""
    model, tokenizer = loaded
    seen = at_each_processor_call(monkeypatch, lambda tokens: tokens.tolist())
    runs = []
    for fold in (True, False):
        gen = generator(model, fold)
        uid = insert(gen, model, tokenizer, request(tokenizer, "Hello world", 4))
        run(gen, [uid])
        runs.append(list(seen))
        seen.clear()
    assert runs[0] == runs[1]
    assert runs[0][0] == tokenizer.encode("Hello world")


@pytest.mark.parametrize(("fold", "steps"), [(True, 1), (False, 2)])
def test_a_folded_prompt_reaches_its_first_token_in_one_step(loaded, fold, steps):
    """From nothing: the prefill's step samples and reads the first token (2 steps without)."""
    model, tokenizer = loaded
    gen = generator(model, fold)
    text = "The capital of France"
    uid = insert(gen, model, tokenizer, request(tokenizer, text, 5))
    calls, first, tokens = 0, None, []
    while len(tokens) < 5:
        _, responses = gen.next()
        calls += 1
        tokens += [r.token for r in responses if r.uid == uid]
        first = first or (calls if tokens else None)
    assert first == steps
    assert tokens == [t for t, _ in alone(model, tokenizer.encode(text), 5)]


@pytest.mark.parametrize(("fold", "steps"), [(True, 2), (False, 3)])
def test_a_folded_prompt_joining_a_running_batch_gains_a_step(loaded, fold, steps):
    """Joining: its first token is read with the batch's next step after its prefill."""
    model, tokenizer = loaded
    gen = generator(model, fold)
    insert(gen, model, tokenizer, request(tokenizer, "Hello world", 20))
    for _ in range(3):
        gen.next()
    uid = insert(gen, model, tokenizer, request(tokenizer, "The quick brown fox", 4))
    calls, first = 0, None
    while first is None:
        _, responses = gen.next()
        calls += 1
        if any(r.uid == uid for r in responses):
            first = calls
    assert first == steps


def test_choices_and_the_prefix_cache_agree_folded_or_not(tiny_repository):
    """``n`` choices fork the leader's prompt cache, later requests start from the prefix
    cache: the texts are the same with and without folding."""
    texts = []
    for fold in (True, False):
        engine = Engine(lambda: load(str(tiny_repository / "tiny")), name="tiny", slots=4,
                        max_queue=4, prefix_cache_bytes=1 << 24, fold_first=fold)
        engine.start()
        engine.wait_loaded(60)
        try:
            prompt = engine.tokenizer.encode("Once upon a time there was a")
            seeded = SamplingParams(temperature=0.9, seed=11, logit_bias={EOS: -100.0})

            async def main(prompt=prompt, seeded=seeded, engine=engine):
                outputs = []
                for tail in ([], [5, 6]):  # the second request starts from the cache
                    streams = engine.submit(GenerationRequest(prompt + tail, 10, seeded), n=3)
                    outputs += [text for text, _ in
                                await asyncio.gather(*(collect(s) for s in streams))]
                return outputs

            texts.append(asyncio.run(main()))
            assert engine.stats().cached_prompt_tokens > 0
        finally:
            engine.stop()
    assert texts[0] == texts[1]
    assert len(set(texts[0][:3])) > 1  # the choices do differ


class _Bypass:
    """A model whose logits do not come through ``self.model``: it must not fold."""

    def __init__(self, model):
        self.model = model.model
        self.layers = model.layers
        self._inner = model

    def __call__(self, inputs, cache=None):
        return self._inner(inputs, cache=cache)


def test_the_model_check_accepts_mlx_lm_models_and_refuses_others(loaded):
    model, _ = loaded
    assert last_positions.supported(model)
    assert not last_positions.supported(_Bypass(model))
    assert "model" not in vars(model)  # the stand-in is gone again
