"""triton-mlx: an inference server for MLX language models.

Importing this package loads an optimized BLAS for MLX's CPU backend on Linux, before anything
imports ``mlx.core`` (see ``triton_mlx.blas``): MLX only picks it up if it is loaded first. This
is the package's one import-time side effect; ``TRITON_MLX_BLAS=none`` turns it off.
"""

from triton_mlx.blas import preload_optimized_blas

preload_optimized_blas()
