"""Students of other architectures, offline: a tiny random model of each family (2 layers, hidden 64)
with a real tokenizer and chat template of a family (from the vocab-only GGUFs and templates llama.cpp
ships for its own tests), then `tmd train` -> `tmd export --ollama` -> `tmd ask` on the bundle.

The export compares the GGUF with the merged Hugging Face model (tokenization of the check texts,
teacher-forced top-1 agreement, greedy generations) and checks the chat template and EOS carried into
the GGUF; this test asserts those results and that the pipeline runs on the bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trainer"

# family -> (model family, tokenizer): each family's own tokenizer where a package here ships it.
FAMILIES = {
    "llama-3": ("llama", "llama-3"),
    "qwen2.5": ("qwen2", "qwen2.5"),
    "qwen3": ("qwen3", "qwen3"),
    # No package here ships Gemma 3's or Phi-3's tokenizer in a form their converters take (Gemma 3:
    # none at all; Phi-3: a vocab GGUF, where the converter wants tokenizer.model), so these two
    # architectures run with Llama 3's tokenizer: conversion, LoRA targets and runtime are theirs.
    "gemma3 (llama-3 tokenizer)": ("gemma3", "llama-3"),
}


@pytest.fixture(scope="session")
def reference_tokenizers(converter, tmp_path_factory):
    from exporter.devtools import make_reference_tokenizer

    made = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = make_reference_tokenizer(name, tmp_path_factory.mktemp(f"tok-{name}"))
        return made[name]
    return get


def invoke(*args):
    from tmd_local.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_train_export_run(family, reference_tokenizers, tmp_path, monkeypatch):
    from exporter.devtools import make_tiny_model
    from exporter.ollama import ollama_values, parse_modelfile, read_chat_tokens, sample_conversations
    from exporter.gotemplate import render_go
    from tmd_local.prompts import render_messages

    monkeypatch.chdir(tmp_path)
    arch, tokenizer = FAMILIES[family]
    base = make_tiny_model(arch, tmp_path / f"tiny-{arch}", reference_tokenizers(tokenizer))

    result = invoke("train", "--module", "analyzer", "--data", FIXTURES, "--base", base, "--out", "ad/analyzer",
                    "--max-steps", "2", "--eval-fraction", "0", "--no-progress", "--lr", "1e-3",
                    "--threads", "1")
    assert result.exit_code == 0, result.output
    tmd = json.loads((tmp_path / "ad" / "analyzer" / "tmd.json").read_text())
    config = json.loads((tmp_path / "ad" / "analyzer" / "adapter_config.json").read_text())
    from trainer.config import TARGET_MODULES

    assert sorted(config["target_modules"]) == sorted(TARGET_MODULES[json.loads((base / "config.json").read_text())["model_type"]])
    assert tmd["module"] == "analyzer"

    result = invoke("export", "--adapters", "ad", "--out", "bundle", "--quant", "f16,q8_0", "--base", base,
                    "--zero-shot", "informant,reasoner,drd", "--threads", "1", "--min-agreement", "0.9",
                    "--ollama", "--ollama-quant", "f16")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    analyzer = manifest["modules"]["analyzer"]["files"]["f16"]
    assert analyzer["tokenizer_match"] is True  # llama.cpp and transformers give the same token ids
    assert analyzer["top1_agreement"] >= 0.9   # the GGUF's next token = the merged HF model's

    tokens = read_chat_tokens(tmp_path / "bundle" / "analyzer.f16.gguf")
    modelfile = parse_modelfile((tmp_path / "bundle" / "ollama" / "analyzer.Modelfile").read_text())
    for messages in sample_conversations():
        expected = render_messages(messages, tokens.chat_template, bos_token=tokens.bos, eos_token=tokens.eos)
        rendered = render_go(modelfile["TEMPLATE"], ollama_values(messages))
        assert (tokens.bos + rendered if tokens.adds_bos and tokens.bos and not rendered.startswith(tokens.bos)
                else rendered) == expected

    result = invoke("ask", "Could a penguin live in the Sahara?", "--option", "A=yes", "--option", "B=no",
                    "--bundle", "bundle", "--quant", "q8_0", "--json", "--n-ctx", "1024", "--threads", "1")
    assert result.exit_code == 0, result.output
    trace = json.loads(result.output[result.output.index("{"):])
    assert trace["stages"]["analyzer"]["model"] == "bundle/analyzer" and trace["answer"] in ("A", "B")
    assert trace["stages"]["reasoner"]["completion_tokens"] > 0
