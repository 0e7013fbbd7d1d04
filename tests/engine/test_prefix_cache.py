"""``PrefixCache``'s search: the longest stored prefix, found without walking the whole trie.

mlx-lm's own ``PromptTrie.search`` is the oracle for what is found (exact entry, shorter entry,
how many tokens a longer entry shares); ours may pick a different longer entry, but one that
shares the same number of tokens with the prompt.
"""

from __future__ import annotations

import random

import mlx.core as mx
from mlx_lm.models.cache import KVCache, PromptTrie

from triton_mlx.engine.prefix_cache import PrefixCache, _PrefixTrie


def kv_cache(tokens: list[int]) -> list[KVCache]:
    """A one-layer cache whose keys record the tokens it holds."""
    cache = KVCache()
    keys = mx.array(tokens, dtype=mx.float32).reshape(1, 1, len(tokens), 1)
    cache.update_and_fetch(keys, keys)
    return [cache]


def held_tokens(cache: list[KVCache]) -> list[int]:
    keys, _ = cache[0].keys_and_values() if cache[0].offset else (mx.zeros((1, 1, 0, 1)), None)
    return [int(x) for x in keys.reshape(-1).tolist()]


def test_a_prompt_starts_from_the_longest_prefix_among_hundreds_of_entries():
    prefix = PrefixCache(1 << 30)
    template = list(range(10))  # the chat template's first tokens, shared by every entry
    rng = random.Random(0)
    stored = []
    for _ in range(300):
        tokens = template + [rng.randrange(100, 10_000) for _ in range(150)]
        prefix.store(tokens, kv_cache(tokens))
        stored.append(tokens)
    target = stored[123]
    prompt = target[:40] + [7, 7, 7]  # leaves entry 123 after 40 tokens
    cache, matched = prefix.fetch(prompt)
    assert matched == 40 and held_tokens(cache) == target[:40]
    prompt = template + [5, 5]  # leaves every entry after the template
    cache, matched = prefix.fetch(prompt)
    assert matched == 10 and held_tokens(cache) == template
    cache, matched = prefix.fetch([99_999, 1, 2])  # shares nothing
    assert (cache, matched) == (None, 0)


def test_a_prompt_that_extends_an_entry_reuses_all_of_it_and_an_equal_one_all_but_one():
    prefix = PrefixCache(1 << 30)
    tokens = [3, 1, 4, 1, 5, 9, 2, 6]
    prefix.store(tokens, kv_cache(tokens))
    cache, matched = prefix.fetch(tokens + [5, 3])
    assert matched == len(tokens) and held_tokens(cache) == tokens
    cache, matched = prefix.fetch(tokens)  # the last prompt token is always prefilled
    assert matched == len(tokens) - 1 and held_tokens(cache) == tokens[:-1]


def test_search_finds_what_mlx_lm_finds_on_random_tries():
    rng = random.Random(1)
    for _ in range(200):
        ours, theirs = _PrefixTrie(), PromptTrie()
        entries = []
        for _ in range(rng.randrange(1, 12)):
            length = rng.randrange(1, 12)
            tokens = [rng.randrange(4) for _ in range(length)]
            entries.append(tokens)
            ours.add("m", tokens, object())
            theirs.add("m", tokens, object())
        prompt = [rng.randrange(4) for _ in range(rng.randrange(0, 14))]
        got, want = ours.search("m", prompt), theirs.search("m", prompt)
        assert (got.exact, got.shorter, got.common_prefix) == (
            want.exact, want.shorter, want.common_prefix)
        assert (got.longer is None) == (want.longer is None)
        if got.longer is not None:
            assert got.longer in entries and got.longer[: got.common_prefix] == prompt[
                : got.common_prefix]


def layered_cache(tokens: list[int], layers: int) -> list[KVCache]:
    """``layers`` layers of ``len(tokens)`` tokens (a contiguous copy: nbytes = tokens held)."""
    out = []
    for _ in range(layers):
        cache = KVCache()
        keys = mx.array(tokens, dtype=mx.float32).reshape(1, 1, len(tokens), 1)
        cache.keys, cache.values, cache.offset = keys, keys, len(tokens)
        out.append(cache)
    return out


def test_pipeline_ranks_with_different_layer_counts_keep_and_evict_the_same_entries():
    # Two ranks of a pipeline: 3 layers and 1 layer; bytes counted at the larger rank's rate.
    per_layer = 8  # two float32 per token per layer (keys and values)
    ranks = {layers: PrefixCache(1000) for layers in (3, 1)}
    for layers, prefix in ranks.items():
        prefix.count_as(3 * per_layer, layers * per_layer)
    rng = random.Random(1)
    prompts = [[rng.randrange(1000) for _ in range(rng.randrange(5, 30))] for _ in range(40)]
    kept: dict[int, list[list[int]]] = {}
    for layers, prefix in ranks.items():
        for i, tokens in enumerate(prompts):
            prefix.store(tokens, layered_cache(tokens, layers))
            if i == 25:
                prefix.shrink_to(300)
        kept[layers] = [p for p in prompts if prefix.fetch(p + [1])[1] == len(p)]
        assert prefix.nbytes <= 1000
    assert kept[3] == kept[1] and 0 < len(kept[1]) < len(prompts)  # some kept, some evicted


def test_without_the_common_unit_the_ranks_would_keep_different_entries():
    ranks = {layers: PrefixCache(1000) for layers in (3, 1)}
    rng = random.Random(1)
    prompts = [[rng.randrange(1000) for _ in range(rng.randrange(5, 30))] for _ in range(40)]
    kept = {}
    for layers, prefix in ranks.items():
        for tokens in prompts:
            prefix.store(tokens, layered_cache(tokens, layers))
        kept[layers] = [p for p in prompts if prefix.fetch(p + [1])[1] == len(p)]
    assert kept[3] != kept[1]  # what count_as prevents
