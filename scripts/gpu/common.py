"""Shared by the GPU-side helpers: the base + one adapter (on the GPU when there is one, else the
CPU, fp32), prompts rendered exactly as `tmd train` renders them (trainer.data.render_prompt),
batched left-padded forward passes."""

from __future__ import annotations

import torch

from tmd_local.core.hf_base import ensure_hf_base
from trainer.data import encode, render_prompt


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def load(adapter_dir, base="smollm2-135m-instruct"):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_hf_base(base)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(DEVICE)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    return model, tokenizer


def left_padded(rows: list[list[int]], pad_id: int):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids.to(DEVICE), mask.to(DEVICE)


def prompt_ids(tokenizer, messages_list):
    return encode(tokenizer, [render_prompt(m, tokenizer) for m in messages_list])
