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

# family -> (model family, tokenizer, the token that ends an assistant turn): each family's own
# tokenizer where a package here ships it.
FAMILIES = {
    "llama-3": ("llama", "llama-3", "<|eot_id|>"),
    "qwen2.5": ("qwen2", "qwen2.5", "<|im_end|>"),
    "qwen3": ("qwen3", "qwen3", "<|im_end|>"),
    # Phi-3's SentencePiece tokenizer.model, rebuilt from llama.cpp's vocab GGUF of Phi-3.
    "phi-3": ("phi3", "phi-3", "<|end|>"),
    # No package here ships Gemma 3's tokenizer (llama.cpp has Gemma 4's, a different vocabulary and
    # tokenizer type), so Gemma 3 runs with Llama 3's: conversion, LoRA targets and runtime are its own.
    "gemma3 (llama-3 tokenizer)": ("gemma3", "llama-3", "<|eot_id|>"),
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
    from tmd_local.core.prompts import render_messages

    monkeypatch.chdir(tmp_path)
    arch, tokenizer, end_of_turn = FAMILIES[family]
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
    assert end_of_turn in tokens.stops  # llama.cpp ends generation where the template ends a turn
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


def test_phi3_tokenizer_tokenizes_like_llama_cpp(converter, reference_tokenizers):
    """The rebuilt Phi-3 tokenizer gives the ids llama.cpp's tokenizer tests expect (made with Phi-3's
    own Hugging Face tokenizer), and llama.cpp's ids on tmd's prompts, whose special tokens swallow
    the newline after them."""
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from exporter.vendor import reference_file
    from exporter.verify import teacher_forced_texts
    from tmd_local.core.prompts import render_messages

    tokenizer = AutoTokenizer.from_pretrained(str(reference_tokenizers("phi-3")))
    vocab = reference_file("models/ggml-vocab-phi-3.gguf")
    inputs = reference_file("models/ggml-vocab-phi-3.gguf.inp").read_text(encoding="utf-8")
    outputs = reference_file("models/ggml-vocab-phi-3.gguf.out").read_text(encoding="utf-8")
    cases = list(zip(inputs.split("\n__ggml_vocab_test__\n"), outputs.splitlines()))
    assert len(cases) > 40
    for text, expected in cases:
        assert tokenizer(text, add_special_tokens=False).input_ids == [int(i) for i in expected.split()], text

    eos = tokenizer.eos_token
    prompts = [render_messages(messages, tokenizer.chat_template, bos_token=tokenizer.bos_token, eos_token=eos)
               + target + eos for _, messages, target in teacher_forced_texts()]
    llm = Llama(model_path=str(vocab), vocab_only=True, verbose=False)
    try:
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False).input_ids
            assert ids == llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            assert tokenizer.convert_tokens_to_ids("<|end|>") in ids
    finally:
        llm.close()


def test_a_phi3_sentencepiece_gguf_is_named_so_llama_cpp_applies_phi3_rules(tmp_path):
    from exporter.ggufinfo import name_for_llama_cpp

    def base(model_type: str, sentencepiece: bool) -> Path:
        folder = tmp_path / f"{model_type}-{sentencepiece}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        if sentencepiece:
            (folder / "tokenizer.model").write_bytes(b"")
        return folder

    phi3 = base("phi3", True)
    assert name_for_llama_cpp(phi3, "Analyzer") == {"general.name": "Analyzer (phi3)"}
    assert name_for_llama_cpp(phi3, "Phi-3.5 mini") == {"general.name": "Phi-3.5 mini"}
    assert name_for_llama_cpp(base("phi3", False), "Analyzer") == {}  # Phi-4: BPE, no such rule
    assert name_for_llama_cpp(base("llama", True), "Analyzer") == {}
