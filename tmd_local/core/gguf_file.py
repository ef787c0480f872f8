"""What a GGUF file holds, read from its header alone: metadata key/values, each tensor's type and
size, and a summary (parameters, file type, real bits per weight, chat template, tmd.* keys).

Pure Python on the header: milliseconds, where gguf-py's GGUFReader maps the whole file and takes
seconds. Tensor byte sizes use gguf-py's own table of ggml block sizes, imported only when asked
for (gguf pulls in numpy, which the app's startup does without).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TmdError
from .quants import FILE_TYPES, file_type_name  # noqa: F401 - general.file_type codes, re-exported

TMD_PREFIX = "tmd."  # tmd's own metadata keys, added by the exporter
DEFAULT_ALIGNMENT = 32  # where tensor data starts, unless general.alignment says otherwise


# --- header ----------------------------------------------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
SMALL_ARRAY = 64  # arrays longer than this (vocabularies, merges) are skipped, not decoded
MAX_NESTING = 8   # arrays of arrays; real files nest one level
MAX_DIMS = 8      # ggml tensors have at most 4
# The fewest bytes one item of each type can take: every count in the header is bounded by what is
# left of the file divided by this, before anything is allocated or looped over.
_MIN_BYTES = {**{k: struct.calcsize(f) for k, f in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}


class _Corrupt(ValueError):
    """A length, count or type in the header that the file cannot hold."""


class _Reader:
    """Reads a GGUF header, trusting no length in it: each is checked against the file's size."""

    def __init__(self, f, size: int):
        self.f = f
        self.size = size

    @property
    def left(self) -> int:
        return self.size - self.f.tell()

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise EOFError
        return struct.unpack(fmt, data)[0]

    def count(self, kind: int, what: str) -> int:
        """A count of items of `kind`, refused when the rest of the file could not hold them."""
        n = self.take("<Q")
        if n * _MIN_BYTES[kind] > self.left:
            raise _Corrupt(f"{what} of {n} items does not fit in the file's {self.size} bytes")
        return n

    def string(self) -> str:
        n = self.take("<Q")
        if n > self.left:
            raise _Corrupt(f"a string of {n} bytes does not fit in the file's {self.size} bytes")
        data = self.f.read(n)
        if len(data) != n:
            raise EOFError
        return data.decode("utf-8", errors="replace")

    def value(self, kind: int, depth: int = 0):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            inner = self.take("<I")
            if inner not in _MIN_BYTES:
                raise _Corrupt(f"unknown GGUF value type {inner}")
            if inner == _ARRAY and depth >= MAX_NESTING:
                raise _Corrupt(f"arrays nested more than {MAX_NESTING} deep")
            count = self.count(inner, "an array")
            if count <= SMALL_ARRAY:
                return [self.value(inner, depth + 1) for _ in range(count)]
            if inner in _SCALARS:
                self.f.seek(count * _MIN_BYTES[inner], 1)
            else:
                for _ in range(count):
                    self.value(inner, depth + 1)
            return None
        raise _Corrupt(f"unknown GGUF value type {kind}")

    def tensor(self) -> "Tensor":
        name = self.string()
        n_dims = self.take("<I")
        if n_dims > MAX_DIMS:
            raise _Corrupt(f"tensor {name[:60]!r} has {n_dims} dimensions")
        n_elements = 1
        for _ in range(n_dims):
            n_elements *= self.take("<Q")
        return Tensor(name, type_code=self.take("<I"), n_elements=n_elements, offset=self.take("<Q"))


@dataclass(frozen=True)
class Tensor:
    name: str
    type_code: int   # ggml type, e.g. 3 = Q4_1
    n_elements: int
    offset: int      # from the start of the tensor data

    @property
    def type_name(self) -> str:
        from gguf.constants import GGMLQuantizationType

        return GGMLQuantizationType(self.type_code).name

    @property
    def n_bytes(self) -> int:
        """Stored size: whole blocks of block_size weights, type_size bytes each (as GGUFReader counts)."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(self.type_code)]
        return self.n_elements * type_size // block_size


def _read(path: Path, with_tensors: bool) -> tuple[dict, list[Tensor], int]:
    """The metadata (long arrays such as the vocabulary come back as None), then, with_tensors,
    the tensors and the file offset where their data starts (else [] and 0)."""
    from .jsonl import require_regular_file

    require_regular_file(Path(path), "GGUF file")  # a FIFO or device would block or never end
    try:
        with open(path, "rb") as f:
            r = _Reader(f, os.fstat(f.fileno()).st_size)
            if f.read(4) != b"GGUF":
                raise TmdError(f"{path}: not a GGUF file")
            version = r.take("<I")
            n_tensors, n_kv = r.take("<Q"), r.count(_STRING, "the key/value list")
            header: dict = {"GGUF.version": version}
            for _ in range(n_kv):
                key = r.string()
                header[key] = r.value(r.take("<I"))
            if not with_tensors:
                return header, [], 0
            if n_tensors * 24 > r.left:  # name length, dims, type, offset: 24 bytes at least
                raise _Corrupt(f"{n_tensors} tensors do not fit in the file's {r.size} bytes")
            tensors = [r.tensor() for _ in range(n_tensors)]
            alignment = header.get("general.alignment") or DEFAULT_ALIGNMENT
            if not isinstance(alignment, int) or isinstance(alignment, bool) or not 0 < alignment <= 1 << 20:
                raise _Corrupt(f"general.alignment {alignment!r}")
            return header, tensors, -(-f.tell() // alignment) * alignment
    except _Corrupt as e:
        raise TmdError(f"{path}: GGUF header is truncated or corrupt ({e})") from None
    except (EOFError, ValueError, OverflowError, struct.error):
        raise TmdError(f"{path}: GGUF header is truncated or corrupt") from None
    except OSError as e:
        raise TmdError(f"{path}: cannot read ({e.strerror})") from None


def read_gguf_header(path: Path, tensors: bool = False) -> dict:
    """A GGUF's metadata key/values (long arrays such as the vocabulary come back as None), plus,
    with tensors=True, "tensors": {name: ggml type code}.

    Reads only the header, so it costs milliseconds where a full GGUFReader takes seconds."""
    header, infos, _ = _read(path, with_tensors=tensors)
    if tensors:
        header["tensors"] = {t.name: t.type_code for t in infos}
    return header


# --- summary ---------------------------------------------------------------------------------

@dataclass
class GGUFInfo:
    """What reports, labels and the exporter's read-back say about a GGUF file."""
    path: Path
    general_type: str               # "model" or "adapter"
    architecture: str
    file_type_code: int | None      # general.file_type
    n_tensors: int
    n_elements: int
    tensor_bytes: int
    tensor_types: dict[str, int]    # tensor type -> number of tensors
    type_elements: dict[str, int]   # tensor type -> number of weights stored in it
    chat_template: str | None
    bos_token_id: int | None
    eos_token_ids: list[int]
    size_bytes: int = 0
    tmd: dict[str, str] = field(default_factory=dict)
    lora_alpha: float | None = None

    @property
    def file_type(self) -> str:
        """e.g. "q4_k_m"; "unknown" when the file does not say (LoRA adapters)."""
        return file_type_name(self.file_type_code) if self.file_type_code is not None else "unknown"

    @property
    def bits_per_weight(self) -> float:
        """The real figure: all tensor bytes * 8 / all weights (fallback types included). Small
        models have widths llama.cpp cannot quantize in 256-blocks, so the nominal type (say q4_1)
        understates the bits really stored."""
        return self.tensor_bytes * 8 / self.n_elements if self.n_elements else 0.0

    @property
    def chat_template_sha256(self) -> str | None:
        return hashlib.sha256(self.chat_template.encode("utf-8")).hexdigest() if self.chat_template else None


def read_gguf_info(path: Path) -> GGUFInfo:
    """The summary, with the figures GGUFReader would give, from the header and the file's size
    (tensor data running past the end is refused here, as GGUFReader refuses it)."""
    header, tensors, data_start = _read(path, with_tensors=True)
    size = Path(path).stat().st_size
    types, elements = Counter(), Counter()
    tensor_bytes = 0
    for t in tensors:
        name, n_bytes = _stored(path, t)
        if data_start + t.offset + n_bytes > size:
            raise TmdError(f"{path}: GGUF is truncated: tensor {t.name} ends past the file's {size} bytes")
        types[name] += 1
        elements[name] += t.n_elements
        tensor_bytes += n_bytes
    code, bos, alpha = (header.get(k) for k in ("general.file_type", "tokenizer.ggml.bos_token_id",
                                                 "adapter.lora.alpha"))
    eos = [header.get(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")]
    template = header.get("tokenizer.chat_template")
    if not all(v is None or _is_int(v) for v in (code, bos, *eos)) or not (
            alpha is None or isinstance(alpha, (int, float))) or not (template is None or isinstance(template, str)):
        raise TmdError(f"{path}: GGUF header is corrupt (a file type, token id, LoRA alpha or chat "
                       "template of the wrong type)")
    return GGUFInfo(
        path=Path(path), general_type=str(header.get("general.type") or "model"),
        architecture=str(header.get("general.architecture") or ""),
        file_type_code=int(code) if code is not None else None,
        n_tensors=len(tensors), n_elements=sum(t.n_elements for t in tensors),
        tensor_bytes=tensor_bytes,
        tensor_types=dict(sorted(types.items())), type_elements=dict(sorted(elements.items())),
        chat_template=template,
        bos_token_id=int(bos) if bos is not None else None,
        eos_token_ids=list(dict.fromkeys(int(x) for x in eos if x is not None)),
        size_bytes=size,
        tmd={k: str(v) for k, v in header.items() if k.startswith(TMD_PREFIX)},
        lora_alpha=float(alpha) if alpha is not None else None)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stored(path: Path, tensor: Tensor) -> tuple[str, int]:
    """(type name, bytes) of a tensor; a type gguf-py does not know is a damaged file to us."""
    try:
        return tensor.type_name, tensor.n_bytes
    except (ValueError, KeyError):
        raise TmdError(f"{path}: tensor {tensor.name} has an unknown ggml type ({tensor.type_code})") from None
