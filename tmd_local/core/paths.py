"""Where tmd keeps what it makes: models, runs, results and caches, under one overridable home.

With $TMD_HOME set, everything lives under it:

    $TMD_HOME/models/        exported bundles (models/<bundle>/manifest.json)
    $TMD_HOME/models/base/   the embedded GGUF dequantized for training and export
    $TMD_HOME/runs/          teacher runs and adapters (runs/<name>/teacher, runs/<name>/adapters)
    $TMD_HOME/results/       `tmd eval` results, read by --memory-budget
    $TMD_HOME/traces/        the app's exported runs
    $TMD_HOME/.cache/        llama.cpp's converters, extracted from the llama-cpp-python sdist

Without it the defaults are the ones tmd always had, so existing folders keep working: models/,
runs/, results/ and traces/ in the working directory, and the two rebuildable artefacts (.cache/ and
models/base/) in the checkout beside the code. $TMD_CACHE_DIR moves only those two, so one cache can
serve several homes (the tests' temporary home reuses one this way).

The bottom of the import graph: standard library only, read at call time (tests change the
environment after import).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TMD_HOME"
CACHE_ENV = "TMD_CACHE_DIR"
# The checkout when tmd runs from one (an editable install); where the caches always lived.
CODE_ROOT = Path(__file__).resolve().parents[2]


def _env_path(variable: str) -> Path | None:
    value = os.environ.get(variable, "").strip()
    return Path(value).expanduser() if value else None


def home() -> Path:
    """$TMD_HOME, else the working directory (as the relative path '.', so defaults print as before)."""
    return _env_path(HOME_ENV) or Path(".")


def models_dir() -> Path:
    return home() / "models"


def runs_dir() -> Path:
    return home() / "runs"


def results_dir() -> Path:
    return home() / "results"


def traces_dir() -> Path:
    return home() / "traces"


def cache_dir() -> Path:
    """$TMD_CACHE_DIR, else $TMD_HOME/.cache, else .cache/ in the checkout."""
    explicit = _env_path(CACHE_ENV)
    if explicit:
        return explicit
    chosen_home = _env_path(HOME_ENV)
    return (chosen_home or CODE_ROOT) / ".cache"


def base_models_dir() -> Path:
    """Dequantized bases: $TMD_CACHE_DIR/base (they are rebuilt from the GGUF, so a cache), else
    models/base/ under $TMD_HOME, else models/base/ in the checkout."""
    explicit = _env_path(CACHE_ENV)
    if explicit:
        return explicit / "base"
    return (_env_path(HOME_ENV) or CODE_ROOT) / "models" / "base"
