"""Reuse of KV caches across requests that share a token prefix.

Multi-turn chats, shared system prompts and agent loops send prompts that start with tokens an
earlier request already processed. When a sequence ends, its KV cache (prompt + output) is kept
under its tokens; a new prompt starts from the longest stored prefix and prefills only the
rest. Bounded by bytes; the least recently stored entries go first (a hit re-stores the entry
with the new sequence's longer tokens, so it counts as recent). Built on mlx-lm's
``LRUPromptCache`` trie.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

_KEY = "model"  # one cache per engine, so one trie root


class PrefixCache:
    """Engine-thread only: not thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._cache = LRUPromptCache(max_size=1 << 30, max_bytes=max_bytes)
        self.hits = 0
        self.cached_tokens = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        return self._cache.nbytes

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
        """Keep ``cache``, which holds exactly ``tokens``; evicts to stay within bounds.

        The cache is evaluated first: a sequence's cache taken out of the batch is a lazy copy
        of its rows, which until evaluated keeps the whole batch's KV buffers alive, bytes
        that its ``nbytes`` (and so the byte bound) does not count."""
        if self.enabled and tokens:
            mx.eval([c.state for c in cache])
            self._cache.insert_cache(_KEY, list(tokens), cache)

    def shrink_to(self, max_bytes: int) -> None:
        """Evict entries until at most ``max_bytes`` are held (to make room for a request)."""
        self._cache.trim_to(n_bytes=max_bytes)
