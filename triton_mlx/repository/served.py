"""A loaded model as the front-ends see it: a chat model or an embedding model.

Both kinds share one small protocol (:class:`ServedModel`): a name, a kind, the thread that
serves it (``worker``: stats and stop, for readiness and draining), and what embeds with it
(``embedder``, or None). A chat model adds its engine, prompts and limits; an embedding model
its encoder. Front-ends narrow with ``isinstance`` (or ``kind``) and never meet a null field.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from triton_mlx.encoders.batching import Embedder
from triton_mlx.encoders.engine import EmbeddingEngine
from triton_mlx.engine.engine import Engine
from triton_mlx.engine.runtime_profile import RuntimeProfile
from triton_mlx.engine.types import EngineStats
from triton_mlx.serving.prompts import PromptBuilder
from triton_mlx.serving.reasoning import ReasoningTags


class Worker(Protocol):
    """The thread that serves a model, as the repository drives it."""

    def stats(self) -> EngineStats: ...

    def stop(self, timeout: float | None = 10.0) -> None: ...


class ServedModel(Protocol):
    """What every loaded model offers, whatever its kind."""

    name: str
    display_name: str
    created: int
    matryoshka: bool

    @property
    def kind(self) -> Literal["chat", "embedding"]: ...

    @property
    def worker(self) -> Worker: ...

    @property
    def embedder(self) -> Embedder | None: ...


@dataclass
class ChatModel:
    """A chat (decoder) model: generation on its engine, prompts through its template.

    It also embeds (``embedder``) where the architecture lets the engine reach its last
    hidden state."""

    name: str
    display_name: str
    engine: Engine
    prompts: PromptBuilder
    context_length: int | None
    vocab_size: int
    max_tokens_limit: int | None
    default_temperature: float | None
    runtime_profile: RuntimeProfile | None = None
    matryoshka: bool = False
    tool_format: str | None = "default"
    """How tool calls are prompted and parsed (``serving.tool_calls``): from its template, or
    ``triton_mlx.json``/``--tool-call-format``; None when its template has a tool format we
    cannot parse (tools then get a 400)."""
    reasoning: ReasoningTags | None = None
    """The reasoning block's tags, for a reasoning model (detected from its template)."""
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def kind(self) -> Literal["chat"]:
        return "chat"

    @property
    def worker(self) -> Engine:
        return self.engine

    @property
    def embedder(self) -> Engine | None:
        return self.engine if self.engine.dimensions else None


@dataclass
class EmbeddingModel:
    """An embedding (encoder) model on an encoder thread of its own."""

    name: str
    display_name: str
    encoder: EmbeddingEngine
    matryoshka: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def kind(self) -> Literal["embedding"]:
        return "embedding"

    @property
    def worker(self) -> EmbeddingEngine:
        return self.encoder

    @property
    def embedder(self) -> EmbeddingEngine:
        return self.encoder
