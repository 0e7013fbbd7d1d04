"""``ignore_eos`` and ``min_tokens`` (vLLM's extensions), on the engine with the tiny model.

A logit bias of +100 on the end-of-sequence token makes it the greedy choice at every step
whatever the random weights, so without either parameter a sequence ends at its first token.
"""

import asyncio

import pytest
from mlx_lm.utils import load

from triton_mlx.engine.engine import Engine
from triton_mlx.engine.types import GenerationRequest, SamplingParams

EOS = 2  # the tiny model's <|im_end|>
EOS_FIRST = SamplingParams(temperature=0.0, logit_bias={EOS: 100.0})
NO_EOS = SamplingParams(temperature=0.0, logit_bias={EOS: -100.0})


@pytest.fixture(scope="module")
def engine(tiny_repository):
    engine = Engine(lambda: load(str(tiny_repository / "tiny")), name="tiny", slots=4,
                    max_queue=8, prefix_cache_bytes=16 * 2**20)
    engine.start()
    engine.wait_loaded(60)
    yield engine
    engine.stop()


def generate(engine, max_tokens, sampling, text="Hello world", **options):
    """(text, completion tokens, finish reason) of one greedy sequence."""
    request = GenerationRequest(engine.tokenizer.encode(text), max_tokens, sampling, **options)

    async def main():
        (stream,) = engine.submit(request)
        return [output async for output in stream]

    outputs = asyncio.run(main())
    last = outputs[-1]
    return "".join(o.text for o in outputs), last.completion_tokens, last.finish_reason


def test_end_of_sequence_ends_it_without_ignore_eos(engine):
    assert engine.tokenizer.eos_token_ids == {EOS}
    assert generate(engine, 8, EOS_FIRST) == ("", 1, "stop")


def test_ignore_eos_runs_to_max_tokens(engine):
    text, tokens, finish = generate(engine, 8, EOS_FIRST, ignore_eos=True)
    assert (tokens, finish) == (8, "length")
    assert text == ""  # the end-of-sequence token is special: the detokenizer skips it


def test_ignore_eos_keeps_stop_strings(engine):
    full, _, _ = generate(engine, 24, NO_EOS)
    stop = full[3:6]
    text, tokens, finish = generate(engine, 24, NO_EOS, stop=(stop,), ignore_eos=True)
    assert finish == "stop" and tokens < 24
    assert text == full[: full.index(stop)]


def test_ignore_eos_sequence_is_kept_in_the_prefix_cache(engine):
    prompt = "The capital of France is Paris. The capital of Italy"
    before = engine.stats().prefix_cache_bytes
    generate(engine, 6, EOS_FIRST, text=prompt, ignore_eos=True)
    assert engine.stats().prefix_cache_bytes > before
    request = GenerationRequest(engine.tokenizer.encode(prompt), 2, NO_EOS)

    async def again():
        (stream,) = engine.submit(request)
        return [output async for output in stream][-1]

    assert asyncio.run(again()).cached_tokens == len(request.prompt_tokens) - 1


@pytest.mark.parametrize("min_tokens", [1, 5])
def test_min_tokens_holds_the_end_of_sequence_back(engine, min_tokens):
    text, tokens, finish = generate(engine, 20, EOS_FIRST, min_tokens=min_tokens)
    # The end-of-sequence token comes the moment it may: right after min_tokens tokens.
    assert (tokens, finish) == (min_tokens + 1, "stop")
    assert text  # the tokens before it are real text


def test_min_tokens_above_max_tokens_ends_at_max_tokens(engine):
    assert generate(engine, 4, EOS_FIRST, min_tokens=50)[1:] == (4, "length")


def test_stop_strings_do_not_end_it_before_min_tokens(engine):
    full, _, _ = generate(engine, 40, NO_EOS)
    stop = full[:2]  # matches at once: the greedy text repeats itself
    early, early_tokens, finish = generate(engine, 40, NO_EOS, stop=(stop,))
    assert (early, finish) == ("", "stop") and early_tokens < 8

    text, tokens, finish = generate(engine, 40, NO_EOS, stop=(stop,), min_tokens=8)
    assert finish == "stop" and 8 <= tokens < 40
    assert stop in text  # matches before min_tokens were let through...
    assert full.startswith(text + stop)  # ...and the next one ended the text
    first_seven = generate(engine, 7, NO_EOS)[0]
    assert len(text + stop) > len(first_seven)  # completed by the 8th token or a later one
