"""The ranks one server runs on, as ``mlx.launch`` started them, and how a model is split.

``python -m triton_mlx`` started by ``mlx.launch`` (MLX's launcher: ring over TCP or
Thunderbolt, jaccl over RDMA, nccl between GPUs) finds itself one of several ranks;
``mx.distributed.init()`` joins the group. Rank 0 serves HTTP and schedules; every rank holds
its shard of the language model and steps the same batch (``lockstep``). With one rank there is
no world and the server runs as it always does.

Splitting a model is mlx-lm's: tensor parallel with ``model.shard(group)`` (each rank holds a
slice of every layer; two all-sums per layer), pipeline with ``model.model.pipeline(group)``
(each rank holds consecutive layers; activations pass from rank to rank). Architectures without
the method cannot be split that way: ``ShardingError`` says so, and the model is unavailable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

KINDS = ("tensor", "pipeline")


class ShardingError(ValueError):
    """The model cannot be split the way asked."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks serving one model."""

    group: Any  # mx.distributed.Group
    rank: int
    size: int
    kind: str  # "tensor" or "pipeline"
    backend: str  # as the launcher set it up: ring, jaccl, nccl, mpi

    @property
    def leader(self) -> bool:
        """Rank 0: the one that serves HTTP and decides what every step does."""
        return self.rank == 0

    def layout(self) -> dict[str, Any]:
        """What ``/v1/models/{id}`` shows of the split."""
        return {"kind": self.kind, "ranks": self.size, "backend": self.backend}


_current: World | None = None


def join(kind: str | None) -> World | None:
    """Join the launcher's group; None when this process runs alone (no launcher, or one rank).

    ``kind`` is ``--parallel``; under a launcher without it, tensor parallel is the default
    (it splits memory and compute alike, and most architectures support it)."""
    global _current
    if kind is not None and kind not in KINDS:
        raise ValueError(f"--parallel must be one of {', '.join(KINDS)}")
    if not launched():
        return None
    group = mx.distributed.init()
    if group.size() == 1:
        return None
    _current = World(group, group.rank(), group.size(), kind or "tensor", _backend())
    return _current


def current() -> World | None:
    """The world joined at start-up, if any."""
    return _current


def launched() -> bool:
    """Whether a launcher started this process as one of several ranks."""
    return "MLX_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ


def _backend() -> str:
    env = os.environ
    if "MLX_JACCL_COORDINATOR" in env or "MLX_IBV_DEVICES" in env:
        return "jaccl"
    if "MLX_WORLD_SIZE" in env:
        return "nccl"
    if "OMPI_COMM_WORLD_RANK" in env or "MLX_MPI_LIBNAME" in env:
        return "mpi"
    return "ring"


def check_shardable(model: Any, kind: str) -> None:
    """Raise ``ShardingError`` unless mlx-lm can split ``model`` as ``kind`` asks."""
    name = type(model).__module__.rsplit(".", 1)[-1]
    if kind == "tensor" and not hasattr(model, "shard"):
        raise ShardingError(f"mlx-lm cannot split the {name} architecture tensor-parallel "
                            "(its model class has no shard()); try --parallel pipeline")
    if kind == "pipeline" and not hasattr(getattr(model, "model", None), "pipeline"):
        raise ShardingError(f"mlx-lm cannot split the {name} architecture into a pipeline "
                            "(its model class has no pipeline()); try --parallel tensor")


def check_divisible(model: Any, ranks: int) -> None:
    """Tensor parallel splits the attention heads: their counts must divide by ``ranks``
    (mlx-lm does not check, and fails later with a shape error)."""
    args = getattr(model, "args", None)
    heads = {key: getattr(args, key, None)
             for key in ("num_attention_heads", "num_key_value_heads")}
    bad = {key: n for key, n in heads.items() if isinstance(n, int) and n % ranks}
    if bad:
        counts = " and ".join(f"{n} {key.replace('num_', '').replace('_', ' ')}"
                              for key, n in heads.items() if isinstance(n, int))
        raise ShardingError(f"the model has {counts}: not divisible by {ranks} ranks; launch "
                            "a number of ranks that divides them, or try --parallel pipeline")


def explain_load_failure(kind: str, error: BaseException) -> ShardingError | None:
    """A clearer error for a split that failed at load for a reason the user can act on, or
    None. MLX 0.32's CUDA backend has no send/receive ("Send has no CUDA implementation"), and
    mlx-lm's pipeline passes activations between ranks with them: on NVIDIA GPUs only tensor
    parallelism runs (checked on two H200s)."""
    if kind == "pipeline" and "has no CUDA implementation" in str(error):
        return ShardingError(f"MLX {mx.__version__}'s CUDA backend cannot send or receive "
                             f"between ranks, which a pipeline needs ({error}); on NVIDIA GPUs "
                             "use --parallel tensor")
    return None


def shard(model: Any, world: World) -> None:
    """Keep only this rank's part of ``model`` (whose weights are not yet evaluated)."""
    check_shardable(model, world.kind)
    if world.kind == "tensor":
        check_divisible(model, world.size)
    if world.kind == "tensor":
        model.shard(world.group)
    else:
        model.model.pipeline(world.group)
