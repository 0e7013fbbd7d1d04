"""Servers holding one tiny model of every family (``tests.tiny_families``), and the calls the
family tests make through the official OpenAI SDK.

Two servers share one repository: ``plain_server`` has no prefix cache, so every prompt
prefills from scratch there (the reference "cold run"), and ``cached_server`` has the default
prefix cache. Both prefill in chunks of ``CHUNK`` tokens, so a prompt of a few sentences is
already a chunked prefill.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import RunningServer, make_config
from tests.tiny_families import FAMILIES, GEMMA3_WINDOW, QUANTIZATIONS, build_family_repository

MODELS = (*FAMILIES, *QUANTIZATIONS)
CHUNK = 16  # prompt tokens per prefill chunk
BAN_EOS = {"2": -100}  # the tiny tokenizer's <|im_end|>: every answer runs to max_tokens
SLIDING = {"gemma3": GEMMA3_WINDOW}  # models with sliding-window layers, and their window


@pytest.fixture(scope="session")
def family_repository(tmp_path_factory) -> Path:
    return build_family_repository(tmp_path_factory.mktemp("families"))


def serve(repository: Path, **overrides) -> RunningServer:
    return RunningServer(make_config(repository, prefill_chunk_tokens=CHUNK, **overrides))


@pytest.fixture(scope="session")
def plain_server(family_repository) -> Iterator[RunningServer]:
    with serve(family_repository, prefix_cache_mb=0) as running:
        yield running


@pytest.fixture(scope="session")
def cached_server(family_repository) -> Iterator[RunningServer]:
    with serve(family_repository) as running:
        yield running


def sdk(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def complete(server: RunningServer, model: str, prompt, max_tokens: int = 8, **kwargs):
    """A greedy completion that runs to ``max_tokens`` (unless ``kwargs`` say otherwise)."""
    args = {"temperature": 0, "logit_bias": BAN_EOS, **kwargs}
    return sdk(server).completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                          **args)


def chat(server: RunningServer, model: str, messages: list[dict], max_tokens: int = 8,
         **kwargs):
    """A greedy chat completion that runs to ``max_tokens`` (unless ``kwargs`` say otherwise)."""
    args = {"temperature": 0, "logit_bias": BAN_EOS, **kwargs}
    return sdk(server).chat.completions.create(model=model, messages=messages,
                                               max_tokens=max_tokens, **args)


def text_of(server: RunningServer, model: str, prompt, max_tokens: int = 8, **kwargs) -> str:
    return complete(server, model, prompt, max_tokens, **kwargs).choices[0].text
