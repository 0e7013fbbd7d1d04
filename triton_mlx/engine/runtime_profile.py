"""Runtime profiles: how a model's weights are laid out for the device it runs on, chosen at load.

- ``gpu`` (Metal, CUDA): the model runs as stored, in its own dtype.
- ``gpu-dense`` (a quantized model on CUDA): every quantized layer dequantized to its scales'
  dtype (bfloat16 or float16). MLX 0.32's CUDA quantized matmul is slow with more than one
  row: on an H200, mlx-lm's own ``BatchGenerator`` decoded a 4-bit Llama-3.2-1B at ~1,900 tok/s
  at 64 streams and no faster at 128, where the bf16 model passes 4,000; a 4-bit 8B model's
  step took 59 ms at 16 streams against 15 ms in bf16 (``bench/cuda_probe.py`` times the two
  matmuls alone). It costs memory (four times the 4-bit weights), so ``auto`` takes it only when
  the dense weights fit half the memory budget. On Metal, whose quantized kernels are fast,
  ``auto`` keeps the weights as stored.
- ``cpu-fast``: every layer dequantized to dense float32. MLX's CPU quantized matmul does not use
  BLAS and does not speed up with batch size, while float32 matmuls through an optimized BLAS do:
  on a 2-core x86 box SmolLM2-135M decodes ~1.4x faster at one stream and ~11x at sixteen, and
  prefills ~10x faster. It costs memory (538 MB instead of 115 MB for that model; 28 GB for a
  7B one) and is only fast with an optimized BLAS loaded (``triton_mlx.blas``); through MLX's
  bundled reference BLAS it is slower than the quantized weights.
- ``cpu-small``: the weights as stored. Quantization scales/biases and all vector parameters
  (norms, biases) become float32, so activations run in float32: float16 scales make CPU
  quantized matmuls ~40x slower, and half-precision matrices of an unquantized model are then
  cast to float32 per matmul and go through BLAS (about as fast as float32 weights, at half the
  memory) instead of MLX's slow half-precision CPU matmul.

``--runtime-profile auto`` takes ``cpu-fast`` on a CPU when an optimized BLAS is loaded and the
dense float32 weights fit the memory budget, else ``cpu-small``; on a GPU it takes ``gpu-dense``
for a quantized model on CUDA whose dense weights fit, else ``gpu``. ``fast`` forces the dense
profile of the device (``cpu-fast``, or ``gpu-dense`` for a quantized model) and ``small`` the
weights as stored (``cpu-small``, ``gpu``).

MLX and mlx-lm are imported inside the functions that use them, on purpose: the command line
imports ``PROFILE_CHOICES`` from here and parses its arguments without loading MLX.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PROFILE_CHOICES = ("auto", "fast", "small")


@dataclass(frozen=True)
class RuntimeProfile:
    """The profile a model runs with, and why; shown in the logs and in ``/v1/models/{id}``."""

    name: str  # "gpu", "gpu-dense", "cpu-fast" or "cpu-small"
    device: str  # "gpu" or "cpu"
    weights: str  # what the weights are at run time
    blas: str | None  # the optimized BLAS loaded for MLX's CPU backend, if any
    reason: str
    warning: bool = False  # chosen against the evidence (forced); logged as a warning

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One log line: name, weights, BLAS (on a CPU) and the reason."""
        blas = "" if self.device == "gpu" else f"; BLAS {self.blas or 'bundled reference'}"
        return f"runtime profile {self.name} (weights {self.weights}{blas}): {self.reason}"


def choose_profile(
    requested: str,
    *,
    on_gpu: bool,
    blas: str | None,
    quantized: bool,
    dense_float32_bytes: int,
    budget_bytes: int,
    cuda: bool = False,
    dequantized_bytes: int = 0,
) -> RuntimeProfile:
    """Pick the profile for a model from facts gathered at load; pure, so every branch is testable.

    ``requested`` is ``auto``, ``fast`` or ``small`` (``--runtime-profile``). On a GPU,
    ``budget_bytes`` is the device's budget and ``dequantized_bytes`` the weights with every
    quantized layer dense in its scales' dtype.
    """
    if requested not in PROFILE_CHOICES:
        raise ValueError(f"runtime profile {requested!r} is not one of {PROFILE_CHOICES}")
    if on_gpu:
        return _gpu_profile(requested, cuda=cuda, quantized=quantized, blas=blas,
                            dense_bytes=dequantized_bytes, budget_bytes=budget_bytes)

    dense = f"dense float32 weights ({format_bytes(dense_float32_bytes)})"
    budget = f"the memory budget ({format_bytes(budget_bytes)})"
    fits = dense_float32_bytes <= budget_bytes

    def fast(reason: str, warning: bool = False) -> RuntimeProfile:
        weights = f"dense float32, {format_bytes(dense_float32_bytes)}"
        return RuntimeProfile("cpu-fast", "cpu", weights, blas, reason, warning)

    def small(reason: str) -> RuntimeProfile:
        weights = ("quantized as stored, float32 scales and norms" if quantized
                   else "as stored, float32 norms and activations")
        return RuntimeProfile("cpu-small", "cpu", weights, blas, reason)

    if requested == "small":
        return small("forced by --runtime-profile small")
    if requested == "fast":
        problems = []
        if blas is None:
            problems.append("no optimized BLAS is loaded, so float32 matmuls go through MLX's "
                            "slow bundled reference BLAS")
        if not fits:
            problems.append(f"{dense} exceed {budget}")
        if problems:
            return fast("forced by --runtime-profile fast although " + " and ".join(problems),
                        warning=True)
        return fast("forced by --runtime-profile fast")
    if blas is None:
        return small("auto: no optimized BLAS is loaded, and dense float32 matmuls through MLX's "
                     "bundled reference BLAS are slower than the weights as stored")
    if not fits:
        return small(f"auto: {dense} would exceed {budget}")
    return fast(f"auto: an optimized BLAS is loaded and {dense} fit {budget}")


def _gpu_profile(requested: str, *, cuda: bool, quantized: bool, blas: str | None,
                 dense_bytes: int, budget_bytes: int) -> RuntimeProfile:
    def stored(reason: str) -> RuntimeProfile:
        return RuntimeProfile("gpu", "gpu", "as stored", blas, reason)

    if not quantized:
        reason = "on a GPU the model runs in its own dtype"
        if requested != "auto":
            reason += f"; --runtime-profile {requested} only changes quantized models on a GPU"
        return stored(reason)
    dense = f"dense weights ({format_bytes(dense_bytes)})"
    half = f"half the memory budget ({format_bytes(budget_bytes // 2)})"
    fits = dense_bytes <= budget_bytes // 2

    def dequantized(reason: str, warning: bool = False) -> RuntimeProfile:
        weights = f"quantized layers dequantized, {format_bytes(dense_bytes)}"
        return RuntimeProfile("gpu-dense", "gpu", weights, blas, reason, warning)

    if requested == "small":
        return stored("forced by --runtime-profile small")
    if requested == "fast":
        if not fits:
            return dequantized(f"forced by --runtime-profile fast although {dense} exceed "
                               f"{half}", warning=True)
        return dequantized("forced by --runtime-profile fast")
    if not cuda:
        return stored("auto: on Metal the quantized kernels are fast; the weights run as stored")
    if not fits:
        return stored(f"auto: {dense} would exceed {half}, so the slower CUDA quantized "
                      "kernels run")
    return dequantized(f"auto: MLX's CUDA quantized matmul is slower than its dense one with "
                       f"more than one row, and {dense} fit {half}")


def format_bytes(n: int) -> str:
    """Sizes in binary units, as ``--max-memory-gb`` counts them (and so labelled)."""
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"


def memory_budget_bytes(max_memory_gb: float | None) -> int:
    """Bytes a model's dense float32 weights may take: ``--max-memory-gb``, else half of RAM.

    Half, because converting holds the stored and the float32 weights at once, and KV caches,
    the OS and other models need the rest. Zero when physical memory cannot be read (then
    ``auto`` keeps the weights as stored).
    """
    if max_memory_gb is not None:
        return int(max_memory_gb * 1024**3)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 0


def gpu_memory_budget_bytes(max_memory_gb: float | None) -> int:
    """The device's budget on a GPU: ``--max-memory-gb``, else what MLX says the GPU has."""
    if max_memory_gb is not None:
        return int(max_memory_gb * 1024**3)
    from triton_mlx.engine.kv_budget import default_memory_budget

    return default_memory_budget()


def on_gpu() -> bool:
    """True when MLX runs on a GPU (Metal or CUDA) by default."""
    import mlx.core as mx

    return mx.default_device().type == mx.DeviceType.gpu


def on_cuda() -> bool:
    """True when that GPU is MLX's CUDA backend (``mx.cuda`` is absent from older builds)."""
    import mlx.core as mx

    cuda = getattr(mx, "cuda", None)
    return bool(cuda is not None and cuda.is_available())


def _is_quantized_layer(module: Any) -> bool:
    # QuantizedLinear, QuantizedEmbedding, mlx-lm's QuantizedSwitchLinear, ...
    return hasattr(module, "bits") and "scales" in module


def is_quantized(model: Any) -> bool:
    return any(_is_quantized_layer(m) for _, m in model.named_modules())


def dense_float32_bytes(model: Any) -> int:
    """Bytes of the model's parameters if every layer were dense float32.

    A quantized layer's packed ``weight`` (``bits`` per value in uint32 words) counts as
    ``weight.shape[-1] * 32 // bits`` float32 columns; its scales and biases vanish.
    """
    return _dense_bytes(model, as_float32=True)


def dequantized_bytes(model: Any) -> int:
    """Bytes of the model's parameters once every quantized layer is dense in its scales' dtype
    (what ``gpu-dense`` holds); the other arrays as they are."""
    return _dense_bytes(model, as_float32=False)


def _dense_bytes(model: Any, as_float32: bool) -> int:
    import mlx.core as mx

    total = 0
    for _, module in model.named_modules():
        quantized = _is_quantized_layer(module)
        for key, array in _own_arrays(module):
            if quantized and key == "weight":
                *rows, packed = array.shape
                itemsize = 4 if as_float32 else module["scales"].itemsize
                total += math.prod(rows) * (packed * 32 // module.bits) * itemsize
            elif quantized and key in ("scales", "biases"):
                continue
            elif as_float32 and mx.issubdtype(array.dtype, mx.floating):
                total += array.size * 4
            else:
                total += array.nbytes
    return total


def dequantize_layers(model: Any) -> None:
    """Every quantized layer made dense, in its scales' dtype: mlx-lm's ``dequantize_model``,
    plus the tensor-parallel layers ``model.shard()`` makes, which it leaves quantized."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.nn.layers import distributed
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model

    dequantize_model(model)
    dense = {distributed.QuantizedAllToShardedLinear: distributed.AllToShardedLinear,
             distributed.QuantizedShardedToAllLinear: distributed.ShardedToAllLinear}
    replaced = []
    for name, module in model.named_modules():
        cls = dense.get(type(module))
        if cls is None:
            continue
        layer = cls.__new__(cls)  # its __init__ would draw random weights of the full size
        nn.Module.__init__(layer)
        layer.group = module.group
        layer.weight = mx.dequantize(module.weight, module.scales, module.get("biases"),
                                     module.group_size, module.bits,
                                     getattr(module, "mode", "affine"))
        if "bias" in module:
            layer.bias = module.bias
        replaced.append((name, layer))
    if replaced:
        model.update_modules(tree_unflatten(replaced))


def apply_profile(model: Any, profile: RuntimeProfile) -> None:
    """Convert ``model`` in place for ``profile`` and evaluate its parameters."""
    import mlx.core as mx

    if profile.name == "cpu-fast":
        dequantize_layers(model)
        _cast_to_float32(model, lambda module, key, array: True)
    elif profile.name == "gpu-dense":
        dequantize_layers(model)
    elif profile.name == "cpu-small":
        _cast_to_float32(
            model, lambda module, key, array: _is_quantized_layer(module) or array.ndim < 2
        )
    mx.eval(model.parameters())


def prepare_model(
    model: Any, requested: str = "auto", max_memory_gb: float | None = None
) -> RuntimeProfile:
    """Gather the facts, choose the profile and apply it; run on the model's engine thread."""
    from triton_mlx.blas import loaded_blas

    gpu, quantized = on_gpu(), is_quantized(model)
    profile = choose_profile(
        requested,
        on_gpu=gpu,
        blas=loaded_blas(),
        quantized=quantized,
        dense_float32_bytes=0 if gpu else dense_float32_bytes(model),
        budget_bytes=(gpu_memory_budget_bytes if gpu else memory_budget_bytes)(max_memory_gb),
        cuda=gpu and on_cuda(),
        dequantized_bytes=dequantized_bytes(model) if gpu and quantized else 0,
    )
    apply_profile(model, profile)
    return profile


def _cast_to_float32(model: Any, select: Callable[[Any, str, Any], bool]) -> None:
    import mlx.core as mx

    for _, module in model.named_modules():
        for key, array in _own_arrays(module):
            if (array.dtype != mx.float32 and mx.issubdtype(array.dtype, mx.floating)
                    and select(module, key, array)):
                setattr(module, key, array.astype(mx.float32))


def _own_arrays(module: Any) -> list[tuple[str, Any]]:
    import mlx.core as mx

    return [(k, v) for k, v in module.items() if isinstance(v, mx.array)]

