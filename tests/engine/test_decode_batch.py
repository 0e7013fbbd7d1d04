"""The decode batch (``DecodeBatch``) against mlx-lm's single-sequence ``generate_step``.

Each test drives the engine's generator directly on the tiny model and compares tokens and log
probabilities with ``generate_step``, which decodes one sequence on plain caches: batched logit
bias, ``min_tokens`` and logprobs must be what each row would get alone, and a sequence that
decodes alone (on plain caches), is joined, and is left alone again must not notice.
"""

from __future__ import annotations

import math

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import BatchKVCache, KVCache
from mlx_lm.sample_utils import make_logits_processors
from mlx_lm.utils import load

from triton_mlx.engine import batch_generator
from triton_mlx.engine.constraints import GrammarCache
from triton_mlx.engine.types import GenerationRequest, SamplingParams

EOS = 2  # the tiny model's <|im_end|>
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def loaded(tiny_repository):
    model, tokenizer = load(str(tiny_repository / "tiny"))
    return model, tokenizer


def new_generator(model, slots=8):
    return batch_generator.new_generator(model, [EOS], slots, 64, mx.default_stream(mx.cpu))


def insert(generator, model, tokenizer, request):
    uid, _ = batch_generator.insert(generator, request, None, 0,
                                    batch_generator.vocab_size(model), [EOS],
                                    GrammarCache(tokenizer, [EOS]))
    return uid


def request(tokenizer, text, max_tokens, sampling=GREEDY, **options):
    return GenerationRequest(tokenizer.encode(text), max_tokens, sampling, **options)


def run(generator, until_done, on_step=None):
    """Step until every uid in ``until_done`` finished: uid -> [(token, logprob)], finish."""
    tokens: dict[int, list] = {uid: [] for uid in until_done}
    finish: dict[int, str] = {}
    step = 0
    while len(finish) < len(tokens):
        _, responses = generator.next()
        for response in responses:
            tokens.setdefault(response.uid, []).append((response.token, response.logprob))
            if response.finish_reason is not None:
                finish[response.uid] = response.finish_reason
        step += 1
        if on_step is not None:
            on_step(step)
    return tokens, finish


def alone(model, prompt, max_tokens, bias=None):
    """``generate_step``'s greedy tokens and log probability vectors for ``prompt``."""
    processors = make_logits_processors(logit_bias=bias) if bias else None
    steps = generate_step(mx.array(prompt), model, max_tokens=max_tokens,
                          logits_processors=processors)
    return [(int(token), logprobs) for token, logprobs in steps]


def test_rows_with_different_logit_biases_each_get_their_own(loaded):
    model, tokenizer = loaded
    generator = new_generator(model)
    biases = [{}, {17: 9.0, 40: 4.0}, {EOS: -100.0, 99: 3.5}]
    requests = [request(tokenizer, text, 6, SamplingParams(temperature=0.0, logit_bias=bias))
                for text, bias in zip(["Hello world", "The quick brown", "def add"], biases,
                                      strict=True)]
    uids = [insert(generator, model, tokenizer, r) for r in requests]
    got, _ = run(generator, uids)
    for uid, r, bias in zip(uids, requests, biases, strict=True):
        expected = [t for t, _ in alone(model, r.prompt_tokens, 6, bias)]
        tokens = [t for t, _ in got[uid]]
        assert tokens[: len(expected)] == expected[: len(tokens)]
    assert [t for t, _ in got[uids[1]]] != [t for t, _ in got[uids[0]]]


def test_min_tokens_holds_end_of_sequence_back_per_row(loaded):
    model, tokenizer = loaded
    generator = new_generator(model)
    eos_first = SamplingParams(temperature=0.0, logit_bias={EOS: 100.0})
    uids = [insert(generator, model, tokenizer,
                   request(tokenizer, "Hello world", 10, eos_first, min_tokens=m))
            for m in (0, 3, 6)]
    got, finish = run(generator, uids)
    assert [len(got[u]) for u in uids] == [1, 4, 7]  # EOS the moment it may come
    assert all(finish[u] == "stop" for u in uids)
    assert all(got[u][-1][0] == EOS and EOS not in [t for t, _ in got[u][:-1]] for u in uids)


def test_logprobs_rows_carry_the_token_value_and_top_alternatives(loaded):
    model, tokenizer = loaded
    generator = new_generator(model)
    prompt = "The capital of France"
    uid_top = insert(generator, model, tokenizer, request(tokenizer, prompt, 5, logprobs=3))
    uid_none = insert(generator, model, tokenizer, request(tokenizer, "Hello", 5))
    uid_zero = insert(generator, model, tokenizer, request(tokenizer, prompt, 5, logprobs=0))
    got, _ = run(generator, [uid_top, uid_none, uid_zero])
    expected = alone(model, tokenizer.encode(prompt), 5)
    assert all(logprob is None for _, logprob in got[uid_none])
    for (token, (value, top)), (token0, (value0, top0)), (want, vector) in zip(
            got[uid_top], got[uid_zero], expected, strict=True):
        assert token == token0 == want
        assert math.isclose(value, vector[want].item(), abs_tol=1e-4)
        assert math.isclose(value, value0, abs_tol=1e-5)  # rows of one batch: equal up to BLAS
        assert top0 == [] and len(top) == 3
        best = sorted(range(vector.size), key=lambda i: -vector[i].item())[:3]
        assert [i for i, _ in top] == best and top[0][1] == value  # greedy: the best one


def test_a_lone_sequence_decodes_on_plain_caches_and_is_joined_and_left_unchanged(loaded):
    model, tokenizer = loaded
    generator = new_generator(model)
    first = request(tokenizer, "Hello world", 24)
    expected = [t for t, _ in alone(model, first.prompt_tokens, 24)]
    uid = insert(generator, model, tokenizer, first)
    kinds = []
    joined = []

    def on_step(step):
        kinds.append({type(c) for c in generator._generation_batch.prompt_cache})
        if step == 6:  # a second sequence joins mid-way, and finishes long before the first
            joined.append(insert(generator, model, tokenizer,
                                 request(tokenizer, "The quick brown fox", 4)))

    got, finish = run(generator, [uid], on_step)
    assert [t for t, _ in got[uid]] == expected and finish[uid] == "length"
    assert len(got[joined[0]]) == 4
    assert kinds[2] == {KVCache}  # alone: plain caches
    assert {BatchKVCache} in kinds[6:10]  # joined: batch caches
    assert kinds[-2] == {KVCache}  # alone again (the last step ended it)


def test_a_sampling_row_beside_greedy_rows_keeps_its_seeded_draws(loaded):
    model, tokenizer = loaded
    seeded = SamplingParams(temperature=1.0, seed=1234)

    def draw(companions):
        generator = new_generator(model)
        uid = insert(generator, model, tokenizer, request(tokenizer, "Hello", 8, seeded))
        others = [insert(generator, model, tokenizer, request(tokenizer, text, 8))
                  for text in companions]
        got, _ = run(generator, [uid, *others])
        return [t for t, _ in got[uid]], [[t for t, _ in got[o]] for o in others]

    solo, _ = draw([])
    together, greedy = draw(["The quick", "def add"])
    assert together == solo
    for text, tokens in zip(["The quick", "def add"], greedy, strict=True):
        assert tokens == [t for t, _ in alone(model, tokenizer.encode(text), 8)]


def test_unseeded_rows_draw_together_each_at_its_own_temperature_and_filters(loaded):
    """Unseeded rows of one set of filters share one draw (``SharedDraw``), yet each keeps its
    own temperature, and rows of other filters, greedy rows and seeded rows keep theirs."""
    model, tokenizer = loaded
    texts = ["Hello", "The quick", "def add", "Once upon"]
    expected = {text: [t for t, _ in alone(model, tokenizer.encode(text), 10)] for text in texts}
    seeded = SamplingParams(temperature=1.0, seed=99)
    generator = new_generator(model)
    cold = insert(generator, model, tokenizer,  # near zero temperature: the argmax
                  request(tokenizer, "Hello", 10, SamplingParams(temperature=1e-4)))
    hot = insert(generator, model, tokenizer,  # same filters (none), near uniform
                 request(tokenizer, "The quick", 10, SamplingParams(temperature=100.0)))
    top1 = insert(generator, model, tokenizer,  # other filters: the top token only
                  request(tokenizer, "def add", 10, SamplingParams(temperature=5.0, top_k=1)))
    greedy = insert(generator, model, tokenizer, request(tokenizer, "Once upon", 10))
    own = insert(generator, model, tokenizer, request(tokenizer, "Hello", 10, seeded))
    got, _ = run(generator, [cold, hot, top1, greedy, own])
    tokens = {uid: [t for t, _ in got[uid]] for uid in got}
    assert tokens[cold] == expected["Hello"]
    assert tokens[top1] == expected["def add"]
    assert tokens[greedy] == expected["Once upon"]
    assert tokens[hot] != expected["The quick"]  # drawn, not the argmax

    solo = new_generator(model)  # the seeded row's draws do not depend on its companions
    alone_uid = insert(solo, model, tokenizer, request(tokenizer, "Hello", 10, seeded))
    assert [t for t, _ in run(solo, [alone_uid])[0][alone_uid]] == tokens[own]


def test_penalised_rows_decode_together_as_alone_while_rows_leave_and_join(loaded):
    """Penalties are kept per row and applied to the penalised rows at once; a row that ends
    early and one that joins late change the stack, and no row's counts move to another."""
    model, tokenizer = loaded
    repeat = SamplingParams(temperature=0.0, repetition_penalty=1.5)
    cases = [("Hello", 12, repeat),
             ("The quick", 5, SamplingParams(temperature=0.0, frequency_penalty=1.0,
                                             presence_penalty=0.5)),  # ends first
             ("def add", 12, GREEDY)]
    late = ("Once upon", 6, SamplingParams(temperature=0.0, repetition_penalty=2.0))

    def solo(text, max_tokens, params):
        generator = new_generator(model)
        uid = insert(generator, model, tokenizer, request(tokenizer, text, max_tokens, params))
        return [t for t, _ in run(generator, [uid])[0][uid]]

    generator = new_generator(model)
    uids = [insert(generator, model, tokenizer, request(tokenizer, *case)) for case in cases]
    joined = []

    def join(step):
        if step == 3:
            joined.append(insert(generator, model, tokenizer, request(tokenizer, *late)))

    got, _ = run(generator, uids, on_step=join)
    while joined[0] not in got or len(got[joined[0]]) < late[1]:
        more, _ = run(generator, [joined[0]])
        got.update({uid: got.get(uid, []) + tokens for uid, tokens in more.items()})
    for uid, case in zip([*uids, joined[0]], [*cases, late], strict=True):
        assert [t for t, _ in got[uid]] == solo(*case)
    assert solo("Hello", 12, GREEDY) != solo(*cases[0])  # the penalty does change the text


@pytest.mark.parametrize("logprobs", [None, 2])
def test_a_batch_begun_from_nothing_reads_its_first_tokens_a_step_sooner(loaded, logprobs):
    """Prefill is one step, the first token the next: no third step before the user sees it.
    The tokens that follow, and their log probabilities, are those of ``generate_step``."""
    model, tokenizer = loaded
    generator = new_generator(model)
    prompt = "The capital of France"
    uid = insert(generator, model, tokenizer, request(tokenizer, prompt, 6, logprobs=logprobs))
    got: list = []
    calls, steps_to_first, done = 0, None, False
    while not done:
        _, responses = generator.next()
        calls += 1
        got += [(r.token, r.logprob) for r in responses if r.uid == uid]
        if steps_to_first is None and got:
            steps_to_first = calls
        done = any(r.finish_reason for r in responses)
    assert steps_to_first == 2
    expected = alone(model, tokenizer.encode(prompt), 6)
    assert [t for t, _ in got] == [t for t, _ in expected]
    if logprobs is not None:
        for (token, (value, top)), (want, vector) in zip(got, expected, strict=True):
            assert token == want and len(top) == 2
            assert math.isclose(value, vector[want].item(), abs_tol=1e-4)


def test_a_sequence_joining_a_running_batch_is_not_read_ahead(loaded):
    """Only a batch begun from nothing reads at once: a newcomer to a running batch gets its
    first token with the batch's next step, and everyone's tokens stay generate_step's."""
    model, tokenizer = loaded
    generator = new_generator(model)
    texts = ["Hello world", "The quick brown fox"]
    first = insert(generator, model, tokenizer, request(tokenizer, texts[0], 12))
    for _ in range(4):
        generator.next()
    second = insert(generator, model, tokenizer, request(tokenizer, texts[1], 6))
    calls, seen = 0, None
    tokens: dict[int, list[int]] = {first: [], second: []}
    while seen is None or len(tokens[second]) < 6:
        _, responses = generator.next()
        calls += 1
        for r in responses:
            tokens[r.uid].append(r.token)
        if seen is None and tokens[second]:
            seen = calls
    assert seen == 3  # prefill, then the split (first token dispatched), then read with a step
    assert tokens[second] == [t for t, _ in alone(model, tokenizer.encode(texts[1]), 6)]


def test_a_batch_that_ends_at_its_first_token_takes_new_sequences(loaded):
    """A row read ahead that ends at once (``max_tokens`` 1) leaves an empty batch that
    later sequences join as usual."""
    model, tokenizer = loaded
    generator = new_generator(model)
    uid = insert(generator, model, tokenizer, request(tokenizer, "Hello world", 1))
    got, finish = run(generator, [uid])
    assert len(got[uid]) == 1 and finish[uid] == "length"
    later = insert(generator, model, tokenizer, request(tokenizer, "The quick brown fox", 5))
    got, _ = run(generator, [later])
    assert [t for t, _ in got[later]] == [
        t for t, _ in alone(model, tokenizer.encode("The quick brown fox"), 5)]


def test_penalties_count_the_first_token_read_ahead_as_generated(loaded):
    """A penalised sequence decodes the same whether its batch began with it (its first token
    read ahead) or it joined a running batch: the first token counts as generated either way."""
    model, tokenizer = loaded
    penalised = SamplingParams(temperature=0.0, frequency_penalty=2.0, presence_penalty=1.0,
                               logit_bias={EOS: -100.0})
    text = "The quick brown fox"

    def decode(join_running: bool, sampling=penalised) -> list[int]:
        generator = new_generator(model)
        if join_running:
            insert(generator, model, tokenizer, request(tokenizer, "Hello world", 40))
            for _ in range(4):
                generator.next()
        uid = insert(generator, model, tokenizer, request(tokenizer, text, 16, sampling))
        got, _ = run(generator, [uid])
        return [t for t, _ in got[uid]]

    alone_first = decode(join_running=False)
    assert alone_first == decode(join_running=True)
    assert alone_first != decode(False, SamplingParams(temperature=0.0,
                                                       logit_bias={EOS: -100.0}))
