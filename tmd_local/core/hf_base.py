"""The base model as a Hugging Face folder, for training (trainer/) and export (exporter/): a local
HF folder, or the embedded GGUF dequantized once and cached (paths.base_models_dir()).

Importing this module is torch-free; torch and transformers load only when a copy is built."""

from __future__ import annotations

from pathlib import Path

from .errors import TmdError
from .jsonl import staged_dir
from .paths import base_models_dir
from .registry import EMBEDDED

DONE_MARKER = "tmd-base.json"  # written last: its presence means the cached copy is complete


def ensure_hf_base(name_or_path: str) -> Path:
    """An HF model folder for `name_or_path`, building the dequantized copy of a GGUF on first use."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TmdError(f"base '{name_or_path}': folder has no config.json (expected a Hugging Face model folder)")
        return path
    if name_or_path in EMBEDDED or path.suffix == ".gguf":
        return _dequantized_copy(name_or_path)
    known = ", ".join(sorted(EMBEDDED))
    raise TmdError(f"base '{name_or_path}': expected a Hugging Face model folder, a .gguf file or one of: {known}")


def _dequantized_copy(name_or_path: str) -> Path:
    import json

    from .registry import resolve_model

    ref = resolve_model(name_or_path)
    target = base_models_dir() / ref.name
    if (target / DONE_MARKER).is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ref.path.parent), gguf_file=ref.path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(ref.path.parent), gguf_file=ref.path.name,
                                                  dtype=torch.float32)
    # transformers >= 5 keeps a GGUF quantizer attached to the loaded model (and refuses to save
    # it), even though the weights were unpacked into plain fp32 tensors on this CPU. Rebuild a
    # plain model from the config without the quantization entry and copy the weights over.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise TmdError(f"{ref.path}: dequantized weights do not match the architecture "
                       f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    del loaded
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    with staged_dir(tmp, target):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / DONE_MARKER).write_text(json.dumps({"source": str(ref.path), "sha256": ref.sha256(),
                                                   "note": "dequantized from the GGUF by transformers"}))
    return target


def _tied_keys(model) -> set[str]:
    """Parameter names that are tied to another one (e.g. lm_head.weight to the embeddings)."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    return {"lm_head.weight"}
