"""The sampling maths of one sequence, checked against a direct numpy computation.

Samplers get the normalised log probabilities; what they draw from is what they pass to
``mx.random.categorical``, which the tests capture. (Penalties: ``test_penalties``.)
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.sample_utils import greedy_sampler

from triton_mlx.engine import sampling
from triton_mlx.engine.types import SamplingParams

VOCAB = 12
PROMPT = [3, 3, 5]
GENERATED = [5, 7, 7, 7, 9]


def random_logits(seed: int = 0) -> np.ndarray:
    """Distinct values of both signs, so ranks and the repetition penalty's rule are clear."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.linspace(-3.0, 3.0, VOCAB)).astype(np.float32)[None, :]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


@pytest.fixture
def drawn_from(monkeypatch):
    """What each sampler call draws from: the argument of ``mx.random.categorical``."""
    seen: list[np.ndarray] = []

    def categorical(logits, key=None):
        seen.append(np.array(logits))
        return mx.argmax(logits, axis=-1)

    monkeypatch.setattr(mx.random, "categorical", categorical)
    return seen


def draw(params: SamplingParams, logprobs: np.ndarray, drawn_from: list) -> np.ndarray:
    sampler = sampling.make_sampler(params, VOCAB)
    sampler(mx.array(logprobs))
    assert len(drawn_from) == 1
    return drawn_from.pop()


def kept_only(logprobs: np.ndarray, keep: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.where(keep, logprobs, -np.inf) / temperature


def test_temperature_zero_is_argmax():
    sampler = sampling.make_sampler(SamplingParams(temperature=0.0), VOCAB)
    assert sampler is greedy_sampler  # one shared object: greedy rows sample in one call
    logprobs = log_softmax(random_logits(4))
    assert int(sampler(mx.array(logprobs)).item()) == int(np.argmax(logprobs))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_divides_the_log_probabilities(temperature, drawn_from):
    logprobs = log_softmax(random_logits(5))
    got = draw(SamplingParams(temperature=temperature), logprobs, drawn_from)
    np.testing.assert_allclose(got, logprobs / temperature, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 3, VOCAB - 1])
def test_top_k_keeps_the_k_most_likely(k, drawn_from):
    logprobs = log_softmax(random_logits(6))
    keep = logprobs >= np.sort(logprobs[0])[-k]
    got = draw(SamplingParams(top_k=k), logprobs, drawn_from)
    np.testing.assert_allclose(got, kept_only(logprobs, keep), rtol=1e-5)
    assert keep.sum() == k


def test_top_k_of_the_whole_vocabulary_filters_nothing(drawn_from):
    logprobs = log_softmax(random_logits(6))
    got = draw(SamplingParams(top_k=VOCAB), logprobs, drawn_from)
    np.testing.assert_allclose(got, logprobs, rtol=1e-5)


@pytest.mark.parametrize("p", [0.3, 0.6, 0.95])
def test_top_p_keeps_the_smallest_set_reaching_p(p, drawn_from):
    logprobs = log_softmax(random_logits(7))
    probs = np.exp(logprobs[0].astype(np.float64))
    mass_above = np.array([probs[probs > q].sum() for q in probs])
    keep = (mass_above < p)[None, :]  # a token is in while the likelier ones fall short of p
    got = draw(SamplingParams(top_p=p), logprobs, drawn_from)
    np.testing.assert_allclose(got, kept_only(logprobs, keep), rtol=1e-5)
    assert probs[keep[0]].sum() >= p and 0 < keep.sum() < VOCAB


@pytest.mark.parametrize("min_p", [0.05, 0.3])
def test_min_p_keeps_tokens_at_least_min_p_times_the_likeliest(min_p, drawn_from):
    logprobs = log_softmax(random_logits(8))
    probs = np.exp(logprobs)
    keep = probs >= min_p * probs.max()
    got = draw(SamplingParams(min_p=min_p), logprobs, drawn_from)
    np.testing.assert_allclose(got, kept_only(logprobs, keep), rtol=1e-5)
    assert 0 < keep.sum() < VOCAB


def test_filters_then_temperature(drawn_from):
    """The filters apply to the log probabilities as they come; the temperature scales what
    survives them."""
    logprobs = log_softmax(random_logits(9))
    probs = np.exp(logprobs[0].astype(np.float64))
    mass_above = np.array([probs[probs > q].sum() for q in probs])
    keep = (mass_above < 0.9) & (probs >= 0.1 * probs.max())
    keep &= probs >= np.sort(probs[keep])[-min(4, keep.sum())]
    params = SamplingParams(temperature=0.7, top_p=0.9, min_p=0.1, top_k=4)
    got = draw(params, logprobs, drawn_from)
    np.testing.assert_allclose(got, kept_only(logprobs, keep[None, :], 0.7), rtol=1e-5)


def test_a_seed_repeats_its_draws_and_another_seed_differs():
    logprobs = mx.array(np.zeros((1, VOCAB), dtype=np.float32) - math.log(VOCAB))

    def draws(seed: int) -> list[int]:
        sampler = sampling.make_sampler(SamplingParams(temperature=1.0, seed=seed), VOCAB)
        return [int(sampler(logprobs).item()) for _ in range(20)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


@pytest.mark.parametrize("seed", [-(2**63), -35184372088832, -1, 2**64 - 1])
def test_every_accepted_seed_samples_and_repeats(seed):
    """Negative seeds are valid requests (a 500 before: MLX keys are unsigned)."""
    logits = mx.log(mx.softmax(mx.arange(VOCAB, dtype=mx.float32) / 10, axis=-1))[None]
    samplers = [sampling.make_sampler(SamplingParams(temperature=2.0, seed=seed), VOCAB)
                for _ in range(2)]
    first, second = ([int(sample(logits).item()) for _ in range(5)] for sample in samplers)
    assert first == second


def test_only_unseeded_sampling_shares_a_draw():
    assert sampling.shared_draw(SamplingParams(temperature=0.0), VOCAB) is None
    assert sampling.shared_draw(SamplingParams(temperature=1.0, seed=3), VOCAB) is None
    shared = sampling.shared_draw(SamplingParams(temperature=0.7, top_k=VOCAB, min_p=0.1), VOCAB)
    assert shared == sampling.SharedDraw(0.7, sampling.Filters(min_p=0.1))  # top_k=VOCAB: off


def test_a_shared_draw_scales_each_row_by_its_own_temperature(drawn_from):
    logits = np.concatenate([random_logits(11), random_logits(12)])
    sampling.draw_rows(mx.array(logits), mx.array([[1 / 0.5], [1 / 2.0]]), sampling.Filters())
    np.testing.assert_allclose(drawn_from.pop(), logits / np.array([[0.5], [2.0]]), rtol=1e-5)


def test_a_shared_draw_with_top_p_filters_each_row_on_its_probabilities(drawn_from):
    logits = np.concatenate([random_logits(13), random_logits(14)]) + np.array([[40.0], [-40.0]])
    sampling.draw_rows(mx.array(logits), mx.array([[1.0], [1.0]]), sampling.Filters(top_p=0.5))
    for row, got in zip(logits, drawn_from.pop(), strict=True):
        expected = draw(SamplingParams(temperature=1.0, top_p=0.5), log_softmax(row[None]),
                        drawn_from)
        np.testing.assert_allclose(got, expected[0], rtol=1e-5)
