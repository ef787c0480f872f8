"""Write small LoRA adapters in llama.cpp's GGUF adapter format, for tests and the benchmark.

The exporter turns trained peft adapters into this format; tests and `make bench` need adapters that
llama.cpp accepts for the embedded base model without training one. These are random (or zero)
low-rank updates to the attention query/value projections: enough to prove (and time) loading,
swapping and clearing. In the package, so the benchmark needs nothing from tests/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmd_local.core.gguf_file import read_gguf_header


def write_lora(base: Path, out: Path, *, rank: int = 8, scale: float = 0.0, seed: int = 0,
               alpha: float | None = None) -> Path:
    """A LoRA GGUF for `base`: B = scale * random, so scale=0 leaves the model's outputs unchanged."""
    import gguf

    header = read_gguf_header(base)
    arch = header["general.architecture"]
    n_layer = header[f"{arch}.block_count"]
    n_embd = header[f"{arch}.embedding_length"]
    n_head = header[f"{arch}.attention.head_count"]
    n_head_kv = header.get(f"{arch}.attention.head_count_kv", n_head)
    kv_dim = n_embd // n_head * n_head_kv
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha if alpha is not None else rank))
    for layer in range(n_layer):
        for name, n_out in (("attn_q", n_embd), ("attn_v", kv_dim)):
            # float32 only: llama.cpp accepts f64 LoRA tensors, then crashes in the first matmul.
            # numpy shapes are ggml's reversed: lora_a is [n_in, r] in ggml, lora_b is [r, n_out].
            a = (rng.standard_normal((rank, n_embd)) / np.sqrt(n_embd)).astype(np.float32)
            b = (scale * rng.standard_normal((n_out, rank))).astype(np.float32)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
