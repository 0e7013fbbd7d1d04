"""Loading one model folder into a served model: a chat model's engine and prompts, or an
embedding model's encoder, each on a thread of its own.

Whatever fails after a model's thread started stops that thread before the error goes on, so
a failed load never leaves weights in memory (and poll mode's retries never pile them up).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.utils import load_model, load_tokenizer

from triton_mlx.config import ServerConfig
from triton_mlx.distributed import lockstep
from triton_mlx.distributed import world as distributed_world
from triton_mlx.distributed.world import World
from triton_mlx.encoders import is_bert_config
from triton_mlx.encoders.engine import EmbeddingEngine
from triton_mlx.engine import cuda_attention, mlx_lm_fixes
from triton_mlx.engine.engine import Engine
from triton_mlx.engine.model_thread import ModelThread
from triton_mlx.engine.runtime_profile import RuntimeProfile, on_cuda, prepare_model
from triton_mlx.repository.served import ChatModel, EmbeddingModel
from triton_mlx.repository.settings import ModelFolderError, ModelSettings
from triton_mlx.serving.prompts import PromptBuilder
from triton_mlx.serving.reasoning import reasoning_tags
from triton_mlx.serving.tool_calls import detect_format


def load_served_model(
    name: str,
    path: Path,
    settings: ModelSettings,
    config: ServerConfig,
    chat_template: str | None = None,
) -> ChatModel | EmbeddingModel:
    """Load the folder at ``path`` as the model ``name`` (blocking: call it off the event
    loop). ``chat_template`` overrides the model's own (``--chat-template``)."""
    folder_config = read_config(path)
    if is_bert_config(folder_config):
        return _load_encoder(name, path, settings, config)
    return _load_chat(name, path, settings, config, folder_config, chat_template)


def _load_chat(
    name: str,
    path: Path,
    settings: ModelSettings,
    config: ServerConfig,
    folder_config: dict,
    chat_template: str | None,
) -> ChatModel:
    chosen: list[RuntimeProfile] = []
    engine = new_engine(name, path, settings, config, on_profile=chosen.append)
    with _stopped_on_failure(engine):
        template = chat_template or model_chat_template(engine.tokenizer)
        prompts = PromptBuilder(engine.tokenizer, template)
        source = prompts.template_source(with_tools=True)
        tool_format = (settings.tool_call_format or config.tool_call_format
                       or detect_format(source))
        return ChatModel(
            name=name,
            display_name=settings.display_name or name,
            engine=engine,
            prompts=prompts,
            context_length=folder_config.get("max_position_embeddings"),
            vocab_size=int(folder_config.get("vocab_size") or engine.tokenizer.vocab_size),
            max_tokens_limit=settings.max_tokens,
            default_temperature=settings.default_temperature,
            runtime_profile=chosen[0],
            matryoshka=settings.matryoshka,
            tool_format=tool_format,
            reasoning=reasoning_tags(source),
        )


def new_engine(name: str, path: Path, settings: ModelSettings, config: ServerConfig,
               on_profile: Callable[[RuntimeProfile], None] | None = None) -> Engine:
    """The engine of the chat model in ``path`` (not started). Launched on several ranks
    (``distributed``), the first chat model is split across them and steps in lockstep; rank 0
    announces it so the other ranks load it too. Later ones run on rank 0 alone."""
    slots = min(config.max_concurrent_requests,
                settings.max_batch_size or config.max_concurrent_requests)
    world = distributed_world.current()
    split = world is not None and lockstep.claim(name)
    kwargs: dict[str, Any] = {
        "name": name,
        "slots": slots,
        "max_queue": config.max_queued_requests,
        "memory_budget_bytes": int(config.max_memory_gb * 2**30) if config.max_memory_gb
        else None,
        "prefix_cache_bytes": int(config.prefix_cache_mb * 2**20),
        "prefill_step_size": config.prefill_chunk_tokens,
        "warmup": config.warmup,
    }

    def load() -> tuple[Any, Any]:
        return load_model_folder(path, runtime_profile=config.runtime_profile,
                                 max_memory_gb=config.max_memory_gb, on_profile=on_profile,
                                 world=world if split else None)

    if not split:
        return Engine(load, **kwargs)
    announce = {"kind": "load", "name": name} if world.leader else None
    return lockstep.LockstepEngine(load, world=world, announce=announce, **kwargs)


def _load_encoder(
    name: str, path: Path, settings: ModelSettings, config: ServerConfig
) -> EmbeddingModel:
    """A BERT-family folder: an embedding model on an encoder thread of its own."""
    if not any(path.glob("*.safetensors")):
        raise ModelFolderError("no *.safetensors weight files")
    if not (path / "tokenizer.json").is_file():
        raise ModelFolderError("no tokenizer.json (an embedding model needs one)")
    for key in ("max_tokens", "default_temperature"):
        if getattr(settings, key) is not None:
            raise ModelFolderError(f"{key} does not apply to an embedding model")
    encoder = EmbeddingEngine(path, name=name, max_queue=config.max_queued_requests,
                              max_rows=settings.max_batch_size)
    with _stopped_on_failure(encoder):
        return EmbeddingModel(
            name=name,
            display_name=settings.display_name or name,
            encoder=encoder,
            matryoshka=settings.matryoshka,
        )


class _stopped_on_failure:  # noqa: N801 - used as a statement: ``with _stopped_on_failure(t):``
    """Start ``thread`` and wait for its model; if that or anything in the block fails,
    stop the thread (releasing the weights) before the error goes on."""

    def __init__(self, thread: ModelThread) -> None:
        self.thread = thread

    def __enter__(self) -> ModelThread:
        self.thread.start()
        try:
            self.thread.wait_loaded()
        except BaseException:
            self.thread.stop()
            raise
        return self.thread

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self.thread.stop()


def read_config(path: Path) -> dict:
    """The folder's ``config.json``, which must hold a JSON object."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"config.json is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelFolderError("config.json must hold a JSON object")
    return config


def model_chat_template(tokenizer: Any) -> str | dict[str, str] | None:
    """The tokenizer's own chat template, or its named templates (``tool_use`` serves requests
    with tools, ``default`` the others, as transformers chooses)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        named = {k: v for k, v in template.items() if isinstance(k, str) and isinstance(v, str)}
        return named or None
    return template if isinstance(template, str) else None


def load_model_folder(
    path: Path,
    *,
    runtime_profile: str = "auto",
    max_memory_gb: float | None = None,
    on_profile: Callable[[RuntimeProfile], None] | None = None,
    world: World | None = None,
) -> tuple[Any, Any]:
    """Return (model, tokenizer) for a local mlx-lm folder; never reaches for a model hub.

    The weights are converted for the runtime profile chosen here (``runtime_profile``: auto,
    fast or small); ``on_profile`` receives the choice, since the engine's loader contract is
    (model, tokenizer) only. With a ``world``, only this rank's shard is kept: the weights
    load lazily and only the shard is read into memory.
    """
    if not (path / "config.json").is_file():
        raise ModelFolderError("config.json is missing")
    if not any(path.glob("*.safetensors")):
        raise ModelFolderError("no *.safetensors weight files")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise ModelFolderError("no tokenizer.json or tokenizer.model")
    mlx_lm_fixes.apply()
    if on_cuda():  # no cuDNN graph built per prompt shape (cuda_attention's docstring)
        cuda_attention.install()
    model, config = load_model(path, lazy=world is not None)
    if world is not None:
        distributed_world.shard(model, world)
        mx.eval(model.parameters())
    profile = prepare_model(model, runtime_profile, max_memory_gb)
    if on_profile is not None:
        on_profile(profile)
    tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    return model, tokenizer
