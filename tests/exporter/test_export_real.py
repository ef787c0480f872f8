"""The real embedded base (SmolLM2-135M-Instruct, dequantized) with a LoRA: merge -> f16 GGUF -> q8_0,
top-1 agreement of the f16 file with the merged HF model, and the file alone runs in llama.cpp."""

from __future__ import annotations

import pytest

from exporter import bundle as B
from exporter.export import ExportOptions, export


@pytest.mark.slow
def test_real_base_with_lora(hf_base, converter, tmp_path):
    from llama_cpp import Llama

    from exporter.devtools import make_random_lora
    from tmd_local.core.gguf_file import read_gguf_info

    adapters = tmp_path / "run" / "adapters"
    make_random_lora(hf_base, adapters / "analyzer", "analyzer", base_name="smollm2-135m-instruct",
                     r=16, alpha=8, b_std=0.08, seed=3)
    out = tmp_path / "bundle"
    result = export(ExportOptions(adapters=adapters, out=out, quants=["f16", "q8_0"], mode="merged",
                                  threads=2, keep_merged=False))
    bundle = B.read_manifest(out, check="sha256")
    m = bundle.manifest
    assert m["base"] == "smollm2-135m-instruct"  # a registry model: other roles run on it zero-shot
    assert {r: e.mode for r, e in bundle.roles.items()} == {
        "analyzer": "merged", "informant": "base", "reasoner": "base", "drd": "base"}
    files = m["modules"]["analyzer"]["files"]
    assert files["f16"]["top1_agreement"] >= 0.99, files["f16"]
    assert files["q8_0"]["top1_agreement"] >= 0.9, files["q8_0"]
    assert files["f16"]["tokenizer_match"] is True
    # SmolLM2's 576-wide matrices are q8_0-able (32-blocks): q8_0 is really ~8.5 bits per weight.
    assert files["q8_0"]["bits_per_weight"] == pytest.approx(8.5, abs=0.2)
    assert not (out / "merged").exists()  # --no-keep-merged
    print("\nreal base + LoRA:", {q: (f["top1_agreement"], f["bits_per_weight"], f["size"]) for q, f in files.items()},
          f"{result.seconds:.0f}s")

    info = read_gguf_info(out / "analyzer.q8_0.gguf")
    assert info.tmd["tmd.role"] == "analyzer" and info.tmd["tmd.base"] == "smollm2-135m-instruct"
    assert "<|im_start|>" in info.chat_template and info.eos_token_ids == [2]

    # Only the file: llama.cpp reads the chat template and EOS from it and answers.
    llm = Llama(model_path=str(out / "analyzer.q8_0.gguf"), n_ctx=512, n_threads=2, verbose=False)
    try:
        reply = llm.create_chat_completion([{"role": "user", "content": "What is the capital of France?"}],
                                           max_tokens=24, temperature=0.0)
        text = reply["choices"][0]["message"]["content"]
        assert text.strip(), reply
        assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        llm.close()
