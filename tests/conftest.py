"""Shared fixtures: the embedded model, the benchmark data (skipped with a reason when absent), and
an isolated working directory for anything a command writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmd_local.datasets import default_data_dir
from tmd_local.errors import TmdError
from tmd_local.registry import DEFAULT_MODEL, resolve_model


@pytest.fixture(scope="session")
def embedded_model():
    try:
        return resolve_model(DEFAULT_MODEL)
    except TmdError as e:
        pytest.skip(f"embedded model not installed: {e}")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = default_data_dir()
    if found is None or not (found / "strategyqa").is_dir():
        pytest.skip("benchmark data not found: set TMD_DATA_DIR or place shared/data beside the checkout")
    return found


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in a temp dir so results/, runs/ and models/ written by commands stay out of the repo."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
