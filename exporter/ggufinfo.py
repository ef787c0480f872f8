"""Adding tmd's own metadata keys (tmd.*) to a GGUF. Reading files back (what was really written)
is tmd_local.core.gguf_file.read_gguf_info.

Uses the `gguf` package (GGUFReader / GGUFWriter); no torch.

Why a copy for metadata: llama.cpp's converter only takes authorship overrides (`--metadata` sets
`general.*` keys), and adding keys to a GGUF changes the header size, so they cannot be patched in
place. `copy_with_metadata` therefore writes a new file - all key/values of the converter's output,
plus ours, then the tensor data byte for byte - the same way gguf-py's own `gguf_new_metadata`
script does. Quantizing keeps every key of its input, so the quantized files inherit `tmd.*`.
"""

from __future__ import annotations

from pathlib import Path

from tmd_local.core.errors import TmdError
from tmd_local.core.jsonl import read_json

# llama.cpp gives a Phi-3 vocabulary's special tokens the rstrip attribute (the whitespace after
# <|user|>, <|end|>, ... belongs to them, as in Phi-3's tokenizer_config) only in a GGUF whose
# general.name contains one of these (src/llama-vocab.cpp); without it, it tokenizes every prompt
# unlike transformers.
PHI3_NAME_MARKS = ("phi3", "phi-3")


def copy_with_metadata(src: Path, dst: Path, extra: dict[str, str]) -> None:
    """Write `dst`: the GGUF `src` with the string keys `extra` added (or replaced)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(str(src))
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        raise TmdError(f"{src}: has no general.architecture")
    writer = GGUFWriter(str(dst), arch=arch_field.contents(), endianess=reader.endianess)
    alignment = reader.fields.get("general.alignment")
    if alignment is not None:
        writer.data_alignment = int(alignment.contents())
    for name, f in reader.fields.items():
        if name == "general.architecture" or name.startswith("GGUF.") or name in extra:
            continue  # GGUFWriter writes the architecture and the GGUF.* header itself
        vtype = f.types[0]
        sub_type = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, f.contents(), vtype, sub_type=sub_type)
    for key, val in extra.items():
        writer.add_key_value(key, str(val), GGUFValueType.STRING)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()


def name_for_llama_cpp(base_dir: Path, name: str) -> dict[str, str]:
    """{"general.name": ...} where llama.cpp keys tokenizer behaviour on the name: a Phi-3 base with a
    SentencePiece vocabulary (Phi-4's BPE vocabulary has no such rule) gets "(phi3)" after `name`."""
    try:
        config = read_json(base_dir / "config.json", "model config")
    except TmdError:
        return {}
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type == "phi3" and (base_dir / "tokenizer.model").is_file():
        marked = any(mark in name.lower() for mark in PHI3_NAME_MARKS)
        return {"general.name": name if marked else f"{name} (phi3)"}
    return {}
