"""Helpers for the exporter tests: fake adapter folders and bases, written without torch."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tmd_local.core.formats import AdapterMeta

# --- adapter folders without torch (for the input checks) -------------------------------------

TINY_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
               "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 49152}


def write_fake_base(folder: Path, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or TINY_CONFIG))
    return folder


def write_fake_adapter(folder: Path, module: str = "analyzer", *, base: str = "tiny-llama",
                       hidden: int = 64, kv: int = 32, r: int = 4, layers: int = 2, tmd: bool = True,
                       **config) -> Path:
    """adapter_config.json + a safetensors file with the right header (zero weights) + tmd.json."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": 8, "base_model_name_or_path": base,
           "target_modules": ["q_proj", "v_proj"], **config}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    header, offset = {}, 0
    for layer in range(layers):
        for proj, out in (("q_proj", hidden), ("v_proj", kv)):
            for ab, shape in (("A", [r, hidden]), ("B", [out, r])):
                n = shape[0] * shape[1] * 4
                name = f"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_{ab}.weight"
                header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
                offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))
    if tmd:
        meta = AdapterMeta(module=module, base=base, teacher="gold", data="x", prompt_version="v")
        (folder / "tmd.json").write_text(json.dumps(meta.to_json()))
    return folder
