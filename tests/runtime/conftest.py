"""Fixtures for the runtime tests: small generation settings, bundles written into tmp (pointing at
the embedded GGUF), and LoRA adapters built for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tmd_local.core.lora_gguf import write_lora
from runtime_helpers import ROLES, file_entry, small_settings, write_manifest
from tmd_local.runtime.generation import GenerationSettings


@pytest.fixture
def settings() -> GenerationSettings:
    return small_settings()


@pytest.fixture
def linked_bundle(tmp_path, embedded_model):
    """A 'merged' bundle whose four roles are symlinks to the embedded GGUF (one real file)."""
    folder = tmp_path / "linked"
    folder.mkdir()
    modules = {}
    for role in ROLES:
        link = folder / f"{role}.q4_1.gguf"
        link.symlink_to(embedded_model.path)
        modules[role] = {"mode": "merged", "files": {"q4_1": file_entry(link)}}
    write_manifest(folder, modules)
    return folder


@pytest.fixture(scope="session")
def gguf_copies(tmp_path_factory, embedded_model):
    """Two distinct files with the embedded model's bytes: two modules that really take memory twice."""
    folder = tmp_path_factory.mktemp("copies")
    copies = []
    for name in ("first.gguf", "second.gguf"):
        shutil.copyfile(embedded_model.path, folder / name)
        copies.append(folder / name)
    return copies


@pytest.fixture(scope="session")
def loras(tmp_path_factory, embedded_model) -> dict[str, Path]:
    """zero: B = 0, so outputs equal the base model's; a, b: two different random adapters."""
    folder = tmp_path_factory.mktemp("loras")
    return {"zero": write_lora(embedded_model.path, folder / "zero.lora.gguf", scale=0.0),
            "a": write_lora(embedded_model.path, folder / "a.lora.gguf", scale=0.05, seed=1),
            "b": write_lora(embedded_model.path, folder / "b.lora.gguf", scale=0.05, seed=2)}
