"""Stand-in inputs for developing and testing the exporter without a training run.

`make_random_lora` writes a folder shaped like the trainer's output (docs/FORMATS.md section 3): a peft
adapter with non-zero lora_B (so merging really changes the model), the tokenizer, and tmd.json.
`make_tiny_llama` writes a small random Llama model that shares SmolLM2's tokenizer, so llama.cpp's
converter recognises its vocabulary. Both import torch: only tests and dev scripts call them.
"""

from __future__ import annotations

from pathlib import Path

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_random_lora(base_dir: Path, out_dir: Path, module: str, *, base_name: str | None = None,
                     seed: int = 0, r: int = 16, alpha: int = 8, b_std: float = 0.02,
                     teacher: str = "random-dev", prompt_version: str | None = None) -> Path:
    """A peft LoRA on the HF model in `base_dir`, with random lora_B of std `b_std`, saved to `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tmd_local import __version__
    from tmd_local.formats import AdapterMeta
    from tmd_local.jsonl import write_json_atomic
    from tmd_local.prompts import PROMPT_VERSION

    from .merge import quiet_transformers

    quiet_transformers()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(LORA_TARGETS), lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, b_std)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(out_dir))
    meta = AdapterMeta(module=module, base=base_name or base_dir.name, base_source=str(base_dir),
                       teacher=teacher, data="none (random LoRA for development)", data_sha256=None,
                       hyperparameters={"r": r, "alpha": alpha, "targets": LORA_TARGETS, "b_std": b_std,
                                        "seed": seed},
                       tmd_version=__version__, prompt_version=prompt_version or PROMPT_VERSION)
    write_json_atomic(out_dir / "tmd.json", meta.to_json())
    return out_dir


def make_tiny_llama(out_dir: Path, tokenizer_dir: Path, *, hidden: int = 64, layers: int = 2,
                    heads: int = 4, kv_heads: int = 2, intermediate: int = 160, seed: int = 0) -> Path:
    """A random Llama with SmolLM2's tokenizer (copied from `tokenizer_dir`), saved in float32."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=2048,
                         rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return _save_randomized(LlamaForCausalLM(config), tokenizer, out_dir)


def _save_randomized(model, tokenizer, out_dir) -> Path:
    """Weights larger than the init default, so the logits are not all ties; saved with the tokenizer."""
    import torch

    model = model.to(torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


# --- other architectures, offline -------------------------------------------------------------
# Real tokenizers of other families, from the vocab-only GGUFs llama.cpp ships for its tokenizer
# tests (exporter.vendor.reference_file), with the chat templates it ships for its template tests.
# name -> (vocab GGUF, chat template, end-of-turn token that is the tokenizer's EOS, BOS or None)
REFERENCE_TOKENIZERS = {
    "llama-3": ("ggml-vocab-llama-bpe.gguf", "meta-llama-Llama-3.2-3B-Instruct.jinja", "<|eot_id|>",
                "<|begin_of_text|>"),
    "qwen2.5": ("ggml-vocab-qwen2.gguf", "Qwen-Qwen2.5-7B-Instruct.jinja", "<|im_end|>", None),
    "qwen3": ("ggml-vocab-qwen2.gguf", "Qwen-Qwen3-0.6B.jinja", "<|im_end|>", None),
}


def make_reference_tokenizer(name: str, out_dir: Path) -> Path:
    """A Hugging Face tokenizer folder with a real family's vocabulary and chat template."""
    from transformers import AutoTokenizer

    from .vendor import reference_file

    vocab, template, eos, bos = REFERENCE_TOKENIZERS[name]
    gguf = reference_file(f"models/{vocab}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.chat_template = reference_file(f"models/templates/{template}").read_text(encoding="utf-8")
    tokenizer.eos_token = eos
    tokenizer.bos_token = bos
    if tokenizer.pad_token is None:
        tokenizer.pad_token = eos
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def make_tiny_model(family: str, out_dir: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """A random 2-layer model of `family` (llama, qwen2, qwen3, gemma3, phi3), hidden 64, float32,
    saved with the tokenizer from `tokenizer_dir`."""
    import torch
    import transformers as tf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    configs = {
        "llama": lambda: (tf.LlamaConfig(**common), tf.LlamaForCausalLM),
        "qwen2": lambda: (tf.Qwen2Config(**common), tf.Qwen2ForCausalLM),
        "qwen3": lambda: (tf.Qwen3Config(head_dim=16, **common), tf.Qwen3ForCausalLM),
        "gemma3": lambda: (tf.Gemma3TextConfig(head_dim=16, sliding_window=64, query_pre_attn_scalar=16,
                                               **common), tf.Gemma3ForCausalLM),
        "phi3": lambda: (tf.Phi3Config(**{**common, "tie_word_embeddings": False}), tf.Phi3ForCausalLM),
    }
    config, model_class = configs[family]()
    torch.manual_seed(seed)
    return _save_randomized(model_class(config), tokenizer, out_dir)
