"""The optimized BLAS loaded at import, each case in a fresh interpreter (it happens once)."""

import os
import subprocess
import sys

import pytest

from triton_mlx.blas import debian_openblas_paths

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

REPORT = (
    "import triton_mlx.blas as b, mlx.core as mx; "
    "mx.eval(mx.ones((64, 64)) @ mx.ones((64, 64))); "
    "maps = open('/proc/self/maps').read(); "
    "print(b.loaded_blas()); print(b.blas_status()); print('openblas' in maps)"
)


def run(code: str, blas: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_MLX_BLAS"}
    if blas is not None:
        env["TRITON_MLX_BLAS"] = blas
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout.splitlines()


def test_none_keeps_the_bundled_blas():
    loaded, status, mapped = run(REPORT, "none")
    assert loaded == "None" and "TRITON_MLX_BLAS=none" in status and mapped == "False"


def test_a_missing_path_is_reported():
    loaded, status, _ = run(REPORT, "/nonexistent/libblas.so.3")
    assert loaded == "None" and "/nonexistent/libblas.so.3 does not exist" in status


@pytest.mark.skipif(not any(os.path.exists(p) for p in debian_openblas_paths()),
                    reason="Debian's libopenblas0-pthread is not installed")
def test_importing_the_package_loads_debian_openblas():
    path = next(p for p in debian_openblas_paths() if os.path.exists(p))
    loaded, status, mapped = run(REPORT, None)
    assert loaded == path and path in status and mapped == "True"


def test_too_late_once_mlx_is_imported():
    loaded, status, _ = run("import mlx.core; " + REPORT, None)
    assert loaded == "None" and "mlx.core was imported before triton_mlx" in status
