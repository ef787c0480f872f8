"""Helpers shared by the runtime tests (a module of its own: `conftest` names clash across test folders)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tmd_local.runtime.generation import GenerationSettings
from tmd_local.core.registry import file_sha256
from tmd_local.core.roles import ROLES  # noqa: F401 - the runtime tests import it from here


def llama_threads() -> int:
    """Two cores shared with other work run llama.cpp faster on one thread than on two."""
    cores = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] >= cores else cores


def small_settings(**max_tokens) -> GenerationSettings:
    settings = GenerationSettings(n_ctx=1024, n_threads=llama_threads())
    settings.max_tokens = {"analyzer": 24, "informant": 12, "reasoner": 24, "drd": 24, **max_tokens}
    return settings


def file_entry(path: Path, name: str | None = None, **overrides) -> dict:
    entry = {"file": name or path.name, "size": path.stat().st_size, "sha256": file_sha256(path.resolve()),
             "bits_per_weight": 5.0}
    return {**entry, **overrides}


def write_manifest(folder: Path, modules: dict, **top) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "tmd-bundle/1", "tmd_version": "0.1.0", "created": "2026-01-01T00:00:00",
                "base": "smollm2-135m-instruct", "teacher": "gold", "data": "strategyqa/train",
                "prompt_version": "paper-appendix-a/letters-v1", "modules": modules, **top}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path
