"""Stand-in inputs for developing and testing the exporter without a training run.

`make_random_lora` writes a folder shaped like the trainer's output (docs/FORMATS.md section 3): a peft
adapter with non-zero lora_B (so merging really changes the model), the tokenizer, and tmd.json.
`make_tiny_llama` writes a small random Llama model that shares SmolLM2's tokenizer, so llama.cpp's
converter recognises its vocabulary. Both import torch: only tests and dev scripts call them.
"""

from __future__ import annotations

import json
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
    meta = {"module": module, "base": base_name or base_dir.name, "base_source": str(base_dir),
            "teacher": teacher, "data": "none (random LoRA for development)", "data_sha256": None,
            "hyperparameters": {"r": r, "alpha": alpha, "targets": LORA_TARGETS, "b_std": b_std,
                                "seed": seed},
            "tmd_version": __version__, "prompt_version": prompt_version or PROMPT_VERSION}
    (out_dir / "tmd.json").write_text(json.dumps(meta, indent=2) + "\n")
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
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():  # larger weights than the init default, so the logits are not all ties
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
