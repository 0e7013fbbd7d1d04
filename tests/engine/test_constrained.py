"""Constrained decoding with the tiny random model: whatever its weights would say, the text a
grammar-constrained sequence produces is in the grammar, and the sequences beside it in the
batch produce what they produce alone."""

from __future__ import annotations

import asyncio
import json
import re

import llguidance
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.utils import load

from tests.engine.steps import collect
from triton_mlx.engine import constraints
from triton_mlx.engine.engine import Engine
from triton_mlx.engine.types import EngineError, GenerationRequest, SamplingParams

SCHEMA = {
    "type": "object",
    "properties": {
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "degrees": {"type": "integer", "minimum": 0, "maximum": 999},
    },
    "required": ["unit", "degrees"],
    "additionalProperties": False,
}
# Compact JSON: a random model left free to pick whitespace rarely closes the object in time.
JSON_GRAMMAR = llguidance.LLMatcher.grammar_from_json_schema(
    SCHEMA, defaults={"whitespace_flexible": False})
CODE = "[0-9]{3}-[a-z]{2}"
CODE_GRAMMAR = llguidance.LLMatcher.grammar_from_regex(CODE)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"}},
    "required": ["name", "ok"],
    "additionalProperties": False,
}
PERSON_GRAMMAR = llguidance.LLMatcher.grammar_from_json_schema(
    PERSON, defaults={"whitespace_flexible": False})
GREEDY = SamplingParams(temperature=0.0)
NO_EOS = SamplingParams(temperature=0.0, logit_bias={2: -100.0})  # runs to max_tokens


@pytest.fixture(scope="module")
def engine(tiny_repository):
    engine = Engine(lambda: load(str(tiny_repository / "tiny")), name="tiny", slots=4,
                    max_queue=8)
    engine.start()
    engine.wait_loaded(60)
    yield engine
    engine.stop()


def prompt(engine, text="The weather today"):
    return engine.tokenizer.encode(text)


def run(engine, *requests: GenerationRequest, n: int = 1):
    """Submit every request at once (so they share the batch) and collect each choice."""
    async def main():
        streams = [s for r in requests for s in engine.submit(r, n)]
        return await asyncio.gather(*(collect(s) for s in streams))

    return asyncio.run(main())


def assert_valid_weather(text: str) -> None:
    value = json.loads(text)
    assert set(value) == {"unit", "degrees"}
    assert value["unit"] in ("celsius", "fahrenheit")
    assert isinstance(value["degrees"], int) and 0 <= value["degrees"] <= 999


def assert_valid_person(text: str) -> None:
    value = json.loads(text)
    assert set(value) == {"name", "ok"}
    assert isinstance(value["name"], str) and len(value["name"]) <= 6
    assert isinstance(value["ok"], bool)


def assert_valid(grammar: str, text: str) -> None:
    if grammar == JSON_GRAMMAR:
        assert_valid_weather(text)
    elif grammar == PERSON_GRAMMAR:
        assert_valid_person(text)
    else:
        assert re.fullmatch(CODE, text), text


def test_json_schema_output_always_validates_when_sampling(engine):
    requests = [GenerationRequest(prompt(engine), 80, SamplingParams(temperature=1.0, seed=s),
                                  grammar=JSON_GRAMMAR) for s in range(4)]
    for text, last in run(engine, *requests):
        assert last.finish_reason == "stop", text
        assert_valid_weather(text)


def test_checker_refuses_what_the_schema_refuses():
    # The hand-written validator above is the oracle: it must also say no.
    for bad in ('{"unit": "kelvin", "degrees": 3}', '{"unit": "celsius"}',
                '{"unit": "celsius", "degrees": 1.5}', '{"unit": "celsius", "degrees": 3, "x": 1}'):
        with pytest.raises((AssertionError, json.JSONDecodeError)):
            assert_valid_weather(bad)


def test_regex_output_matches_exactly_and_stops(engine):
    [(text, last)] = run(engine, GenerationRequest(prompt(engine), 40, GREEDY,
                                                   grammar=CODE_GRAMMAR))
    assert re.fullmatch(CODE, text), text
    assert last.finish_reason == "stop"


def test_a_grammar_that_cannot_finish_in_max_tokens_ends_with_length(engine):
    [(text, last)] = run(engine, GenerationRequest(prompt(engine), 3, GREEDY,
                                                   grammar=CODE_GRAMMAR))
    assert last.finish_reason == "length" and last.completion_tokens == 3
    assert re.fullmatch(CODE, text) is None
    assert re.fullmatch(r"[0-9]{1,3}(-[a-z]{0,2})?", text), text  # a prefix of the grammar


def test_grammar_wins_over_ignore_eos_and_min_tokens(engine):
    request = GenerationRequest(prompt(engine), 40, SamplingParams(temperature=1.0, seed=3),
                                grammar=CODE_GRAMMAR, ignore_eos=True, min_tokens=30)
    [(text, last)] = run(engine, request)
    assert re.fullmatch(CODE, text), text
    assert last.finish_reason == "stop" and last.completion_tokens < 30


def test_an_unconstrained_sequence_is_the_same_beside_constrained_ones(engine):
    free = GenerationRequest(prompt(engine, "Hello world"), 24, NO_EOS)
    [(alone, _)] = run(engine, free)
    constrained = [GenerationRequest(prompt(engine), 80, GREEDY, grammar=JSON_GRAMMAR),
                   GenerationRequest(prompt(engine), 40, GREEDY, grammar=CODE_GRAMMAR)]
    (batched, last), (json_text, _), (code_text, _) = run(engine, free, *constrained)
    assert batched == alone and last.finish_reason == "length"
    assert_valid_weather(json_text)
    assert re.fullmatch(CODE, code_text), code_text


def test_each_choice_and_each_grammar_of_a_batch_is_valid(engine):
    sampled = SamplingParams(temperature=1.0, seed=11)
    results = run(engine, GenerationRequest(prompt(engine), 80, sampled, grammar=JSON_GRAMMAR),
                  n=2)
    for text, last in results:
        assert last.finish_reason == "stop"
        assert_valid_weather(text)
    (json_text, _), (code_text, _) = run(
        engine, GenerationRequest(prompt(engine), 80, sampled, grammar=JSON_GRAMMAR),
        GenerationRequest(prompt(engine), 40, sampled, grammar=CODE_GRAMMAR))
    assert_valid_weather(json_text)
    assert re.fullmatch(CODE, code_text), code_text


def test_logprobs_are_of_the_masked_distribution(engine):
    async def main():
        [stream] = engine.submit(GenerationRequest(prompt(engine), 40, GREEDY, logprobs=5,
                                                   grammar=CODE_GRAMMAR))
        return [entry async for output in stream for entry in output.logprobs]

    entries = asyncio.run(main())
    decode = engine.tokenizer.decode
    assert re.fullmatch(CODE, "".join(decode([e.token]) for e in entries))
    for entry in entries:  # no alternative the grammar refused (they are at -inf)
        assert all(value > float("-inf") for _, value in entry.top)
    first_alternatives = [decode([token]) for token, _ in entries[0].top]
    assert first_alternatives and all(text.isdigit() for text in first_alternatives)


def test_a_grammar_compiles_once_per_model(engine):
    grammar = llguidance.LLMatcher.grammar_from_regex("(yes|no)")
    before = engine.grammars.compilations
    for _ in range(2):
        [(text, _)] = run(engine, GenerationRequest(prompt(engine), 10, GREEDY, grammar=grammar))
        assert text in ("yes", "no")
    assert engine.grammars.compilations == before + 1


def test_a_matcher_in_error_fails_its_sequence_alone(engine, monkeypatch):
    broken = break_matchers_of(monkeypatch, CODE_GRAMMAR, after=2)
    free = GenerationRequest(prompt(engine, "Hello world"), 24, NO_EOS)
    [(alone, _)] = run(engine, free)

    async def main():
        streams = [*engine.submit(free), *engine.submit(
            GenerationRequest(prompt(engine), 40, GREEDY, grammar=CODE_GRAMMAR)), *engine.submit(
            GenerationRequest(prompt(engine), 80, GREEDY, grammar=JSON_GRAMMAR))]
        return await asyncio.gather(*(collect(s) for s in streams), return_exceptions=True)

    (batched, last), failure, (json_text, json_last) = asyncio.run(main())
    assert broken, "the matcher was never fed a refused token"
    assert isinstance(failure, EngineError)
    assert batched == alone and last.finish_reason == "length"
    assert json_last.finish_reason == "stop"
    assert_valid_weather(json_text)


def break_matchers_of(monkeypatch, grammar: str, after: int) -> list:
    """From its ``after``-th token on, each sequence under ``grammar`` feeds its matcher a token
    the grammar refuses, as on a matcher's internal error; returns those that were broken."""
    under: list = []
    broken: list = []
    real_sequence = constraints.GrammarCache.sequence
    real_consume = constraints.ConstrainedSequence.consume

    def sequence(self, text, *args, **kwargs):
        made = real_sequence(self, text, *args, **kwargs)
        if text == grammar:
            under.append(made)
        return made

    def consume(self, token):
        if any(self is s for s in under) and self.generated >= after:
            broken.append(self)
            token = 0  # a special token: out of every grammar here
        real_consume(self, token)

    monkeypatch.setattr(constraints.GrammarCache, "sequence", sequence)
    monkeypatch.setattr(constraints.ConstrainedSequence, "consume", consume)
    return broken


def test_free_rows_between_constrained_rows_get_what_they_get_alone(engine):
    free = [GenerationRequest(prompt(engine, "Hello world"), 24, NO_EOS),
            GenerationRequest(prompt(engine, "The quick brown fox"), 20, NO_EOS)]
    alone = [run(engine, request)[0][0] for request in free]
    json_request = GenerationRequest(prompt(engine), 80, GREEDY, grammar=JSON_GRAMMAR)
    code_request = GenerationRequest(prompt(engine), 40, GREEDY, grammar=CODE_GRAMMAR)
    # Rows alternate: free, constrained, free, constrained.
    results = run(engine, free[0], json_request, free[1], code_request)
    assert [results[0][0], results[2][0]] == alone
    assert results[0][1].finish_reason == results[2][1].finish_reason == "length"
    assert_valid_weather(results[1][0])
    assert re.fullmatch(CODE, results[3][0]), results[3][0]


def test_each_row_keeps_its_own_grammar(engine):
    grammars = [JSON_GRAMMAR, PERSON_GRAMMAR, CODE_GRAMMAR, PERSON_GRAMMAR]
    requests = [GenerationRequest(prompt(engine), 80, SamplingParams(temperature=1.0, seed=i),
                                  grammar=g) for i, g in enumerate(grammars)]
    for grammar, (text, last) in zip(grammars, run(engine, *requests), strict=True):
        assert last.finish_reason == "stop", text
        assert_valid(grammar, text)


def test_rows_that_join_and_leave_mid_run_keep_their_grammar(engine):
    free = GenerationRequest(prompt(engine, "Hello world"), 30, NO_EOS)
    [(alone, _)] = run(engine, free)
    grammars = [JSON_GRAMMAR, CODE_GRAMMAR, PERSON_GRAMMAR,  # start beside ``free``
                CODE_GRAMMAR, JSON_GRAMMAR, PERSON_GRAMMAR, CODE_GRAMMAR]  # wait for a slot
    requests = [GenerationRequest(prompt(engine, f"Day {i}"), 80,
                                  SamplingParams(temperature=1.0, seed=20 + i), grammar=g)
                for i, g in enumerate(grammars)]
    leaver = GenerationRequest(prompt(engine), 80, GREEDY, grammar=JSON_GRAMMAR)

    async def first_then_cancel(stream):
        async for output in stream:
            stream.cancel()  # it leaves the batch at the next step
            return output.text
        return ""

    async def main():
        streams = [s for r in (free, *requests) for s in engine.submit(r)]
        [leaving] = engine.submit(leaver)
        return await asyncio.gather(first_then_cancel(leaving),
                                    *(collect(s) for s in streams))

    first, (batched, last), *constrained = asyncio.run(main())
    assert first.startswith("{")
    assert batched == alone and last.finish_reason == "length"
    for grammar, (text, last) in zip(grammars, constrained, strict=True):
        assert last.finish_reason == "stop", text
        assert_valid(grammar, text)


def test_every_choice_of_n_has_its_own_matcher(engine):
    free = GenerationRequest(prompt(engine, "Hello world"), 24, NO_EOS)
    [(alone, _)] = run(engine, free)
    sampled = GenerationRequest(prompt(engine), 80, SamplingParams(temperature=1.0, seed=5),
                                grammar=PERSON_GRAMMAR)

    async def main():
        streams = [*engine.submit(free), *engine.submit(sampled, n=3)]
        return await asyncio.gather(*(collect(s) for s in streams))

    (batched, _), *choices = asyncio.run(main())
    assert batched == alone
    assert len(choices) == 3
    for text, last in choices:
        assert last.finish_reason == "stop"
        assert_valid_person(text)


def test_min_tokens_holds_the_end_back_row_by_row(engine):
    grammar = llguidance.LLMatcher.grammar_from_regex("a[a-z]*")  # can end after each token
    eager = {t: 100.0 for t in engine.tokenizer.eos_token_ids}  # ends as soon as allowed
    params = SamplingParams(temperature=0.0, logit_bias=eager)
    held = GenerationRequest(prompt(engine), 20, params, grammar=grammar, min_tokens=6)
    free = GenerationRequest(prompt(engine), 20, params, grammar=grammar)
    (held_text, held_last), (free_text, free_last) = run(engine, held, free)
    assert free_last.finish_reason == held_last.finish_reason == "stop"
    assert free_text == "a"  # the end came at once
    assert held_last.completion_tokens == 7  # six tokens, then the end
    assert re.fullmatch("a[a-z]*", held_text) and len(held_text) > 1, held_text


@pytest.mark.parametrize("on_device", [False, True], ids=["host-unpack", "device-unpack"])
def test_one_mask_for_the_batch_leaves_free_rows_and_refuses_padding(engine, on_device):
    """Both ways of unpacking the bits (numpy on a CPU, MLX on a GPU) mask alike; the device
    way runs here on MLX's CPU backend."""
    eos_ids = sorted(engine.tokenizer.eos_token_ids)
    grammars = constraints.GrammarCache(engine.tokenizer, eos_ids)
    rows = [grammars.sequence(CODE_GRAMMAR, 0, on_error=pytest.fail) for _ in range(2)]
    width = rows[0].grammar_vocab + 40  # the model's vocabulary, padded past the tokenizer's
    logits = mx.random.normal((3, width))
    masked = constraints.GrammarMasker(unpack_on_device=on_device).apply(
        logits, mx.array([7, 7, 7]), [(0, rows[0]), (2, rows[1])])  # row 1 has no grammar
    masked, logits = np.array(masked), np.array(logits)
    assert np.array_equal(masked[1], logits[1])
    for row in (0, 2):
        allowed = np.flatnonzero(masked[row] > -np.inf)
        assert np.array_equal(masked[row, allowed], logits[row, allowed])
        assert allowed.size and all(engine.tokenizer.decode([int(t)]).isdigit() for t in allowed)
        assert allowed.max() < rows[0].grammar_vocab
