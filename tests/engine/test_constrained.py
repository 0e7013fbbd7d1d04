"""Constrained decoding with the tiny random model: whatever its weights would say, the text a
grammar-constrained sequence produces is in the grammar, and the sequences beside it in the
batch produce what they produce alone."""

from __future__ import annotations

import asyncio
import json
import re

import llguidance
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
    real = constraints.GrammarProcessor.__call__

    def broken(self, tokens, logits):  # the matcher refuses a token, as on an internal error
        if self._consumed >= 2:
            self._matcher.consume_token(0)  # out of the grammar: the matcher enters error
        return real(self, tokens, logits)

    monkeypatch.setattr(constraints.GrammarProcessor, "__call__", broken)
    free = GenerationRequest(prompt(engine, "Hello world"), 24, NO_EOS)
    [(alone, _)] = run(engine, free)

    async def main():
        streams = [*engine.submit(free), *engine.submit(
            GenerationRequest(prompt(engine), 40, GREEDY, grammar=CODE_GRAMMAR))]
        return await asyncio.gather(*(collect(s) for s in streams), return_exceptions=True)

    (batched, last), failure = asyncio.run(main())
    assert isinstance(failure, EngineError)
    assert batched == alone and last.finish_reason == "length"
