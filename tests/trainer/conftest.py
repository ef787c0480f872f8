"""Trainer fixtures: the base's tokenizer, a tiny random Llama with the same tokenizer and chat
template for fast tests, and small teacher-format training sets (the dequantized embedded base,
hf_base, is tests/conftest.py's)."""

from __future__ import annotations

import os

# Before torch loads: OpenMP threads that spin while waiting crawl on a busy 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trainer"


@pytest.fixture(scope="session")
def tokenizer(hf_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(hf_base))


@pytest.fixture(scope="session")
def tiny_base(hf_base, tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) with the real tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(hf_base))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def teacher_dir(tmp_path) -> Path:
    """A copy of the fixture teacher run (analyzer/informant/reasoner/drd .jsonl) tests may edit."""
    target = tmp_path / "teacher"
    shutil.copytree(FIXTURES, target)
    return target


@pytest.fixture
def tiny_config(tiny_base):
    """Builds a fast TrainConfig for the tiny model: fp32 CPU, short runs, no progress bar."""
    from trainer.config import TrainConfig

    def make(data: Path, out: Path, module: str = "analyzer", **changes) -> TrainConfig:
        values = dict(module=module, data=data, out=out, base=str(tiny_base), lr=2e-3, epochs=1,
                      batch_size=2, grad_accum=2, max_length=512, eval_fraction=0.2, save_every=2,
                      device="cpu", precision="fp32", threads=2, progress=False)
        values.update(changes)
        return TrainConfig(**values)
    return make
