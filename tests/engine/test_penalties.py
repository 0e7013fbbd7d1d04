"""Penalties (frequency, presence, repetition), checked against a direct numpy computation.

They are kept and applied as the decode batch does it: a row's counts start from its prompt
less the last token, each token fed to the model is recorded (the prompt's last one as seen,
not generated), and the penalised rows are stacked.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from tests.engine.test_sampling import GENERATED, PROMPT, VOCAB, random_logits
from triton_mlx.engine import sampling
from triton_mlx.engine.penalties import PenaltyStack, RowHistory
from triton_mlx.engine.types import SamplingParams


def history(params: SamplingParams, tokens: list[int],
            prompt_length: int = len(PROMPT)) -> RowHistory:
    """A row's counts after ``tokens``, kept as the decode batch keeps them: made from the
    prompt less its last token, which the first step feeds the model; then each token fed."""
    (penalties,) = sampling.make_logits_processors(params)
    row = RowHistory(penalties, tokens[: prompt_length - 1], VOCAB)
    stack = PenaltyStack([row])
    stack.record(mx.array(tokens[prompt_length - 1 : prompt_length]), generated=False)
    for token in tokens[prompt_length:]:
        stack.record(mx.array([token]))
    stack.unstack()
    return row


def process(params: SamplingParams, tokens: list[int], logits: np.ndarray,
            prompt_length: int = len(PROMPT)) -> np.ndarray:
    stack = PenaltyStack([history(params, tokens, prompt_length)])
    return np.array(stack.apply(mx.array(logits)))


def counts(tokens: list[int]) -> np.ndarray:
    return np.bincount(np.array(tokens, dtype=np.int64), minlength=VOCAB).astype(np.float32)


def test_no_parameter_no_processor():
    assert sampling.make_logits_processors(SamplingParams()) == []


@pytest.mark.parametrize(("frequency", "presence"), [(0.5, 0.0), (0.0, 1.5), (0.7, -0.4)])
def test_frequency_and_presence_penalties_count_generated_tokens_only(frequency, presence):
    logits = random_logits()
    params = SamplingParams(frequency_penalty=frequency, presence_penalty=presence)
    generated = counts(GENERATED)
    expected = logits - (frequency * generated + presence * (generated > 0))[None, :]
    got = process(params, PROMPT + GENERATED, logits)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[0, 3] == logits[0, 3]  # a prompt-only token keeps its logit
    # Before any token is generated nothing is penalised, however often the prompt repeats.
    np.testing.assert_array_equal(process(params, PROMPT, logits), logits)


@pytest.mark.parametrize("penalty", [1.3, 0.8])
def test_repetition_penalty_covers_prompt_and_output_by_sign(penalty):
    logits = random_logits(1)
    seen = np.zeros(VOCAB, dtype=bool)
    seen[PROMPT + GENERATED] = True
    expected = logits.copy()
    row = expected[0]
    row[seen] = np.where(row[seen] < 0, row[seen] * penalty, row[seen] / penalty)
    got = process(SamplingParams(repetition_penalty=penalty), PROMPT + GENERATED, logits)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert (got[0, ~seen] == logits[0, ~seen]).all()


def test_stacked_rows_each_get_their_own_and_keep_them_across_restacking():
    """Rows of different penalties and histories, stacked, then stacked again in another
    order (as when the batch's rows change) and fed more tokens: each row's logits are what
    it gets alone."""
    logits = np.concatenate([random_logits(2), random_logits(3), random_logits(4)])
    cases = [(SamplingParams(frequency_penalty=0.6), PROMPT + [5, 5]),
             (SamplingParams(repetition_penalty=1.4), [1, 2, 4, 6]),
             (SamplingParams(presence_penalty=0.9, repetition_penalty=0.7), PROMPT + [8])]
    rows = [history(params, tokens) for params, tokens in cases]
    stack = PenaltyStack([rows[2], rows[0], rows[1]])
    stack.record(mx.array([10, 11, 10]))  # one more token each, in the stack's order
    stack.unstack()
    got = np.array(PenaltyStack(rows).apply(mx.array(logits)))
    extra = {0: 11, 1: 10, 2: 10}
    for i, (params, tokens) in enumerate(cases):
        alone = process(params, [*tokens, extra[i]], logits[i : i + 1],
                        prompt_length=len(PROMPT) if i != 1 else 4)
        np.testing.assert_allclose(got[i : i + 1], alone, rtol=1e-6)
    assert not np.allclose(got, logits)  # something was penalised
