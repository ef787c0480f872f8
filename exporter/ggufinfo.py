"""Reading GGUF files back (what was really written) and adding tmd's own metadata keys.

Uses the `gguf` package (GGUFReader / GGUFWriter); no torch.

Why a copy for metadata: llama.cpp's converter only takes authorship overrides (`--metadata` sets
`general.*` keys), and adding keys to a GGUF changes the header size, so they cannot be patched in
place. `copy_with_metadata` therefore writes a new file - all key/values of the converter's output,
plus ours, then the tensor data byte for byte - the same way gguf-py's own `gguf_new_metadata`
script does. Quantizing keeps every key of its input, so the quantized files inherit `tmd.*`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tmd_local.errors import TmdError
from tmd_local.runner import FILE_TYPES

TMD_PREFIX = "tmd."


@dataclass
class GGUFInfo:
    path: Path
    general_type: str               # "model" or "adapter"
    architecture: str
    file_type: str                  # from general.file_type, e.g. "q4_k_m"
    n_tensors: int
    n_elements: int
    tensor_bytes: int
    tensor_types: dict[str, int]    # tensor type -> number of tensors
    type_elements: dict[str, int]   # tensor type -> number of weights stored in it
    chat_template: str | None
    bos_token_id: int | None
    eos_token_ids: list[int]
    tmd: dict[str, str] = field(default_factory=dict)
    lora_alpha: float | None = None

    @property
    def bits_per_weight(self) -> float:
        """The real figure: all tensor bytes * 8 / all weights (fallback types included)."""
        return self.tensor_bytes * 8 / self.n_elements if self.n_elements else 0.0

    @property
    def chat_template_sha256(self) -> str | None:
        return hashlib.sha256(self.chat_template.encode("utf-8")).hexdigest() if self.chat_template else None


def read_info(path: Path) -> GGUFInfo:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - gguf raises ValueError/IndexError/... on damaged files
        raise TmdError(f"{path}: not a readable GGUF file ({e})") from None

    def value(key):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    types, elements = Counter(), Counter()
    n_elements = n_bytes = 0
    for t in reader.tensors:
        types[t.tensor_type.name] += 1
        elements[t.tensor_type.name] += int(t.n_elements)
        n_elements += int(t.n_elements)
        n_bytes += int(t.n_bytes)
    code = value("general.file_type")
    eos = [value(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")]
    eos_ids = list(dict.fromkeys(int(x) for x in eos if x is not None))
    alpha = value("adapter.lora.alpha")
    return GGUFInfo(
        path=Path(path), general_type=str(value("general.type") or "model"),
        architecture=str(value("general.architecture") or ""),
        file_type=FILE_TYPES.get(int(code), f"type-{code}") if code is not None else "unknown",
        n_tensors=len(reader.tensors), n_elements=n_elements, tensor_bytes=n_bytes,
        tensor_types=dict(sorted(types.items())), type_elements=dict(sorted(elements.items())),
        chat_template=value("tokenizer.chat_template"),
        bos_token_id=int(value("tokenizer.ggml.bos_token_id")) if value("tokenizer.ggml.bos_token_id") is not None else None,
        eos_token_ids=eos_ids,
        tmd={k: str(f.contents()) for k, f in reader.fields.items() if k.startswith(TMD_PREFIX)},
        lora_alpha=float(alpha) if alpha is not None else None)


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
