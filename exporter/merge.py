"""Merging a LoRA into its base with peft, saved as a standard HF folder (docs/FORMATS.md section 4).

Imports torch/transformers/peft lazily, inside the functions.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from tmd_local.core.errors import TmdError
from tmd_local.core.jsonl import read_json, staged_dir

from .adapters import AdapterInfo

MARKER = "tmd-merged.json"  # written last: its presence (with the right fingerprint) means complete
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
SENTENCEPIECE_MODEL = "tokenizer.model"


def merged_is_current(out_dir: Path, fingerprint: str) -> bool:
    """The marker is written last, so one that is missing, damaged or not ours means "merge again"
    (the folder is rebuilt whole): nothing is lost, and no bad marker can pass for a finished merge."""
    try:
        marker = read_json(out_dir / MARKER, "merge marker")
    except TmdError:
        return False
    return isinstance(marker, dict) and marker.get("fingerprint") == fingerprint


def quiet_transformers() -> None:
    """No per-tensor progress bars or deprecation chatter under the export's own progress."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def load_base(base_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    return AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def merge_in_memory(base_dir: Path, info: AdapterInfo, threads: int | None = None):
    """(merged model, tokenizer, notes) without saving: adapter mode needs it only as the reference."""
    from peft import PeftModel

    if threads:
        import torch

        torch.set_num_threads(threads)
    base = load_base(base_dir)
    try:
        merged = PeftModel.from_pretrained(base, str(info.path)).merge_and_unload()
    except Exception as e:  # noqa: BLE001 - peft raises many types for a mismatched adapter
        raise TmdError(f"{info.path}: peft could not load the adapter onto {base_dir.name} ({e})") from None
    merged.eval()
    tokenizer, note = pick_tokenizer(base_dir, info.path)
    return merged, tokenizer, [note] if note else []


def merge_adapter(base_dir: Path, info: AdapterInfo, out_dir: Path, fingerprint: str,
                  extra_files: dict[str, dict] | None = None, threads: int | None = None):
    """Merge `info` into the base and save it to out_dir (via a .partial folder). Returns
    (merged model, tokenizer, notes) so the caller can use the model without reloading it."""
    from peft import PeftModel

    notes: list[str] = []
    if threads:
        import torch

        torch.set_num_threads(threads)
    base = load_base(base_dir)
    try:
        peft_model = PeftModel.from_pretrained(base, str(info.path))
    except Exception as e:  # noqa: BLE001 - peft raises many types for a mismatched adapter
        raise TmdError(f"{info.path}: peft could not load the adapter onto {base_dir.name} ({e})") from None
    merged = peft_model.merge_and_unload()
    merged.eval()
    tokenizer, note = pick_tokenizer(base_dir, info.path)
    if note:
        notes.append(note)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    with staged_dir(tmp, out_dir):
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        _carry_sentencepiece_model(tmp, info.path, base_dir)
        for name, obj in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(obj) + "\n")
        (tmp / MARKER).write_text(json.dumps({
            "fingerprint": fingerprint, "module": info.module, "source_adapter": str(info.path),
            "adapter_sha256": info.weights_sha256, "base_dir": str(base_dir),
            "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2) + "\n")
        _fsync_dir_files(tmp)
    return merged, tokenizer, notes


def pick_tokenizer(base_dir: Path, adapter_dir: Path):
    """The adapter folder's tokenizer (the one training used) when it has one, else the base's."""
    base_tok = load_tokenizer(base_dir)
    if not all((adapter_dir / f).is_file() for f in TOKENIZER_FILES):
        return base_tok, None
    tok = load_tokenizer(adapter_dir)
    if tok.chat_template != base_tok.chat_template:
        return tok, f"{adapter_dir.name}: its tokenizer's chat template differs from the base's; using the adapter's"
    if tok.eos_token_id != base_tok.eos_token_id:
        return tok, f"{adapter_dir.name}: its tokenizer's EOS differs from the base's; using the adapter's"
    return tok, None


def adapter_eos_override(base_dir: Path, adapter_dir: Path) -> int | None:
    """The EOS id the adapter was trained to end with, when it is not the base's: a LoRA GGUF cannot
    change the base's vocabulary, so the bundle names it and the runtime loads the base with it."""
    tok, _ = pick_tokenizer(base_dir, adapter_dir)
    base_eos = load_tokenizer(base_dir).eos_token_id
    return tok.eos_token_id if tok.eos_token_id is not None and tok.eos_token_id != base_eos else None


def _carry_sentencepiece_model(merged: Path, *sources: Path) -> None:
    """transformers 5 saves no SentencePiece tokenizer.model, yet llama.cpp's converter reads such a
    vocabulary (Phi-3, Llama 2, Gemma 3) only from it: copy it from the adapter or else the base."""
    if (merged / SENTENCEPIECE_MODEL).is_file():
        return
    for folder in sources:
        if (folder / SENTENCEPIECE_MODEL).is_file():
            shutil.copyfile(folder / SENTENCEPIECE_MODEL, merged / SENTENCEPIECE_MODEL)
            return


def _fsync_dir_files(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
