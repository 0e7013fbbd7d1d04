"""Make MLX's CPU backend use an optimized BLAS on Linux.

The ``mlx-cpu`` wheel links a reference (netlib) BLAS, and every dense float32 matmul on the CPU
goes through it: a 512x512 product takes ~50 ms there and ~3 ms with OpenBLAS. Loading an
optimized ``libblas.so.3`` with ``RTLD_GLOBAL`` *before* ``mlx.core`` is imported makes its
symbols win over the bundled ones. Importing ``triton_mlx`` calls ``preload_optimized_blas()``
for that reason; it is the package's one import-time side effect.

``TRITON_MLX_BLAS`` picks the library: a path to a ``libblas.so.3`` exporting the standard
(unprefixed) BLAS/CBLAS symbols, or ``none`` to keep MLX's bundled BLAS. Unset, Debian's
``libopenblas0-pthread`` is tried. PyPI's scipy-openblas wheels prefix their symbols and cannot
stand in.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

ENV_VAR = "TRITON_MLX_BLAS"

_loaded: str | None = None
_status = "not attempted: triton_mlx.blas.preload_optimized_blas() has not run"
_attempted = False


def debian_openblas_paths() -> list[str]:
    """Where Debian's ``libopenblas0-pthread`` puts its BLAS for this machine's architecture."""
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
    machine = arch.get(platform.machine().lower())
    if machine is None:
        return []
    return [f"/usr/lib/{machine}-linux-gnu/openblas-pthread/libblas.so.3"]


def preload_optimized_blas() -> str | None:
    """Load an optimized BLAS globally so MLX uses it; return its path, or None.

    Runs once (later calls return the first outcome). Does nothing off Linux (macOS MLX uses
    Accelerate) or once ``mlx.core`` has been imported (too late to matter); ``blas_status()``
    says what happened and why.
    """
    global _attempted
    if not _attempted:
        _attempted = True
        _preload()
    return _loaded


def _preload() -> None:
    global _loaded, _status
    if not sys.platform.startswith("linux"):
        _status = f"not needed on {sys.platform}: MLX brings its own optimized BLAS there"
        return
    if "mlx.core" in sys.modules:
        _status = ("not loaded: mlx.core was imported before triton_mlx, too late to replace "
                   "its bundled reference BLAS; import triton_mlx first")
        return
    requested = os.environ.get(ENV_VAR, "").strip()
    if requested.lower() == "none":
        _status = f"{ENV_VAR}=none: MLX keeps its bundled reference BLAS"
        return
    candidates = [requested] if requested else debian_openblas_paths()
    for path in candidates:
        if not os.path.exists(path):
            continue
        try:
            ctypes.CDLL(path, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
        except OSError as exc:
            _status = f"could not load {path}: {exc}"
            return
        _loaded = path
        _status = f"optimized BLAS loaded for MLX's CPU backend: {path}"
        return
    if requested:
        _status = f"{ENV_VAR}={requested} does not exist; MLX keeps its bundled reference BLAS"
    else:
        _status = ("no optimized BLAS found (looked for " + ", ".join(candidates or ["nothing"])
                   + "): dense float32 matmuls on the CPU will be slow; install Debian's "
                   f"libopenblas0-pthread or set {ENV_VAR}")


def loaded_blas() -> str | None:
    """Path of the BLAS library loaded for MLX, or None."""
    return _loaded


def blas_status() -> str:
    """One line for the logs: what was loaded, or why nothing was."""
    return _status
