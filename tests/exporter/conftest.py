"""Exporter fixtures: llama.cpp's converter (extracted once per session into the test home's cache),
a tiny random Llama with SmolLM2's tokenizer, and random LoRA adapters shaped like the trainer's
(the dequantized embedded base, hf_base, is tests/conftest.py's)."""

from __future__ import annotations

import os

# Before torch/llama.cpp load: OpenMP threads that spin while waiting crawl on a busy 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def converter():
    """The real converter of the installed llama-cpp-python (downloads the sdist on first use)."""
    from exporter.vendor import ensure_converter

    return ensure_converter()


@pytest.fixture(scope="session")
def tiny_base(hf_base, tmp_path_factory) -> Path:
    from exporter.devtools import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", hf_base)


@pytest.fixture(scope="session")
def tiny_adapters(tiny_base, tmp_path_factory) -> Path:
    """runs/<name>/adapters with an analyzer LoRA on the tiny base."""
    from exporter.devtools import make_random_lora

    root = tmp_path_factory.mktemp("run") / "adapters"
    make_random_lora(tiny_base, root / "analyzer", "analyzer", base_name="tiny-llama", r=4, alpha=8,
                     b_std=0.05, seed=1)
    return root
