"""Reuse of KV caches across requests that share a token prefix.

Multi-turn chats, shared system prompts and agent loops send prompts that start with tokens an
earlier request already processed. When a sequence ends, its KV cache (prompt + output) is kept
under its tokens; a new prompt starts from the longest stored prefix and prefills only the
rest. Bounded by bytes; the least recently stored entries go first (a hit re-stores the entry
with the new sequence's longer tokens, so it counts as recent). Built on mlx-lm's
``LRUPromptCache`` trie.

Sliding-window layers (gemma2/3's local attention: mlx-lm's ``RotatingKVCache``, a ring buffer
of the last ``max_size`` tokens). A reused cache must hold exactly what a cold prefill of the
same prefix would, so a rotating layer is reused only where that is exact:

- an entry is cut back to a shorter prefix (a prompt that diverges inside it) only while no
  rotating layer has wrapped, i.e. each still holds every token of the entry: then it holds
  the same keys and values as a plain cache (mlx-lm's ``is_trimmable``: offset < max_size).
  Once a layer has wrapped, the tokens before its window are overwritten and the cut is
  impossible; such an entry serves only prompts that extend all of its tokens, which needs no
  cut (the next tokens attend to the window the layer still holds, as in a cold prefill).
- a sequence's end-of-generation entry has usually wrapped when its prompt plus its output
  outgrow the window, even when the prompt alone fits. So for models with rotating layers the
  prompt's own cache is also stored as soon as it is prefilled (``store_prompt``), if every
  rotating layer still holds the whole prompt. A prompt that fits the window is thus reusable
  by any later prompt sharing a prefix with it, whatever the length of the output.
Prompts longer than the window reuse a prefix only as the start of a longer prompt
(multi-turn chats, agent loops); two prompts that share only a long system prompt do not.

Finding the entry. mlx-lm's trie search (0.32.2), when the prompt leaves the stored tokens
partway through an entry, looks for the shortest stored entry below that point by walking the
whole subtree and copying a token list per node: with a few hundred stored chats that share a
chat template's first tokens it took milliseconds per request on the engine thread (a fifth of
its time at 64 streams on a GPU). Every entry below that point shares exactly the same prefix
with the prompt, so ``_PrefixTrie`` follows one branch down to any of them: O(entry length).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import (
    CacheList,
    LRUPromptCache,
    PromptTrie,
    PromptTrieResult,
    RotatingKVCache,
    can_trim_prompt_cache,
    make_prompt_cache,
    trim_prompt_cache,
)

_KEY = "model"  # one cache per engine, so one trie root


class PrefixCache:
    """Engine-thread only: not thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._cache = LRUPromptCache(max_size=1 << 30, max_bytes=max_bytes)
        self._cache._trie = _PrefixTrie()  # mlx-lm 0.32.2's attribute; check on upgrade
        self.hits = 0
        self.cached_tokens = 0
        self.keeps_prompts = False  # set by ``watch_model``
        self._scale = (1, 1)  # (reported, held): see ``count_as``

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        reported, held = self._scale
        return self._cache.nbytes * reported // held

    def count_as(self, reported_per_token: int, held_per_token: int) -> None:
        """Count bytes as if each cached token took ``reported_per_token`` bytes where it
        takes ``held_per_token`` here: for pipeline ranks, which hold different numbers of
        layers but must keep and evict the same entries (``distributed.lockstep``). Exact when
        every layer's cache has the same shape: an entry of T tokens then holds
        T * ``held_per_token`` bytes, and every bound below compares T alike on every rank."""
        self._scale = (reported_per_token, held_per_token)
        self._cache.max_bytes = self._held(self.max_bytes)

    def _held(self, reported: int) -> int:
        scaled, held = self._scale
        return reported * held // scaled

    def watch_model(self, model: Any) -> None:
        """Note whether ``model`` has sliding-window layers, whose prompts are stored as soon as
        they are prefilled (``store_prompt``)."""
        self.keeps_prompts = self.enabled and has_rotating_layers(model)

    def fetch(self, prompt: list[int]) -> tuple[list[Any] | None, int]:
        """A private copy of the cache of the longest stored prefix of ``prompt``, and its
        length in tokens; (None, 0) on a miss. At least one prompt token is always left to
        prefill, since generation starts from the logits of the last prompt token."""
        if not self.enabled:
            return None, 0
        cache, rest = self._cache.fetch_nearest_cache(_KEY, prompt)
        if cache is None:
            return None, 0
        if not rest:
            if not can_trim_prompt_cache(cache):
                return None, 0
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        matched = len(prompt) - len(rest)
        if matched <= 0:
            return None, 0
        self.hits += 1
        self.cached_tokens += matched
        return cache, matched

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep ``cache``, which holds exactly ``tokens``; evicts to stay within bounds."""
        self.store_all([(tokens, cache)])

    def store_all(self, entries: list[tuple[list[int], list[Any]]]) -> None:
        """Keep each (tokens, cache) pair; evicts to stay within bounds.

        The caches are queued for evaluation, all in one go: a sequence's cache taken out of the
        batch is a lazy copy of its rows, which until evaluated keeps the whole batch's KV
        buffers alive, bytes that its ``nbytes`` (and so the byte bound) does not count. Queued,
        not waited for: a wait here would let the device run dry (the step dispatched just
        before would have to finish first, and the next one is not built yet), and would hold
        back the ending sequences' last tokens, which are delivered after this."""
        entries = [(tokens, cache) for tokens, cache in entries if tokens]
        if not self.enabled or not entries:
            return
        mx.async_eval([c.state for _, cache in entries for c in cache])
        for tokens, cache in entries:
            self._cache.insert_cache(_KEY, list(tokens), cache)

    def store_prompt(self, generator: Any, uid: int) -> None:
        """Sequence ``uid`` of mlx-lm's ``generator`` has just prefilled its prompt: for a model
        with sliding-window layers, keep the prompt's cache while every such layer still holds
        the whole prompt (see the module docstring); otherwise do nothing."""
        if not self.keeps_prompts:
            return
        found = generator.extract_cache([uid]).get(uid)
        if found is not None and can_trim_prompt_cache(found[0]):
            cache, tokens = found
            self.store(list(tokens), cache)

    def shrink_to(self, max_bytes: int) -> None:
        """Evict entries until at most ``max_bytes`` are held (to make room for a request)."""
        self._cache.trim_to(n_bytes=self._held(max_bytes))


def has_rotating_layers(model: Any) -> bool:
    """Whether ``model``'s KV cache has sliding-window (``RotatingKVCache``) layers."""

    def rotating(cache: Any) -> bool:
        if isinstance(cache, CacheList):
            return any(rotating(c) for c in cache.caches)
        return isinstance(cache, RotatingKVCache)

    return any(rotating(c) for c in make_prompt_cache(model))


class _PrefixTrie(PromptTrie):
    """mlx-lm's prompt trie, whose search reaches an entry below the divergence point by
    following one branch instead of walking the subtree (see the module docstring)."""

    def search(self, model: Any, tokens: list[int]) -> PromptTrieResult:
        if model not in self._trie:
            return PromptTrieResult(model, None, None, None, 0)
        node = self._trie[model]
        if not tokens and "__value__" in node:
            return PromptTrieResult(model, [], None, None, 0)
        last_index, index = -1, 0  # the longest stored prefix; the tokens walked
        while index < len(tokens) and tokens[index] in node:
            node = node[tokens[index]]
            if "__value__" in node:
                last_index = index
            index += 1
        if last_index == len(tokens) - 1 >= 0:
            return PromptTrieResult(model, tokens, None, None, 0)
        shorter = tokens[: last_index + 1] if last_index > 0 else None
        longer = None
        if index > 0:
            extra: list[int] = []
            while "__value__" not in node and node:  # every leaf holds an entry
                token = next(iter(node))
                extra.append(token)
                node = node[token]
            if "__value__" in node:
                longer = tokens[:index] + extra
        return PromptTrieResult(model, None, shorter, longer, index)
