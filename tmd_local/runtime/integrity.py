"""Checks on a module's files before llama.cpp loads them: the size and sha256 its bundle promised,
and that a LoRA adapter GGUF fits its base and uses tensor types llama.cpp computes with.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import TmdError
from ..core.gguf_file import read_gguf_header
from ..core.registry import ModelRef, file_sha256
from .generation import ModuleRef

# ggml types llama.cpp's loader accepts in a LoRA GGUF but cannot multiply with on CPU: an f64 adapter
# loads fine and then crashes the process in the first matmul, so these are refused with a message.
LORA_REFUSED_TYPES = {24: "i8", 25: "i16", 26: "i32", 27: "i64", 28: "f64"}


def check_lora(adapter: Path, base: Path) -> None:
    """A LoRA GGUF for the base's architecture, with tensor types llama.cpp computes with."""
    header = read_gguf_header(adapter, tensors=True)
    if header.get("general.type") != "adapter" or header.get("adapter.type") != "lora":
        raise TmdError(f"{adapter}: not a LoRA adapter GGUF (general.type={header.get('general.type')!r}, "
                       f"adapter.type={header.get('adapter.type')!r})")
    arch, base_arch = header.get("general.architecture"), read_gguf_header(base).get("general.architecture")
    if arch != base_arch:
        raise TmdError(f"{adapter}: adapter for architecture {arch!r}, but {base.name} is {base_arch!r}")
    bad = {name: t for name, t in header["tensors"].items() if t in LORA_REFUSED_TYPES}
    if bad:
        name, code = next(iter(bad.items()))
        raise TmdError(f"{adapter}: tensor {name} is {LORA_REFUSED_TYPES[code]}, which llama.cpp cannot "
                       f"compute with ({len(bad)} such tensors); export the adapter as f32/f16/q8_0")


def verify_files(ref: ModelRef) -> None:
    """Check a module's files against what its bundle promised: size first (a truncated copy is
    named as such), then sha256 (cached per path+size+mtime, so each file is hashed once)."""
    if not isinstance(ref, ModuleRef):
        return
    verify_file(ref.path, ref.size, ref.sha256_expected, ref.source or str(ref.path))
    if ref.adapter is not None:
        verify_file(ref.adapter, None, ref.adapter_sha256_expected, (ref.source or "") + " adapter")


def verify_file(path: Path, size: int | None, sha256: str | None, where: str) -> None:
    """`path` exists, has `size` bytes and hashes to `sha256` (each when given); `where` names the promise."""
    try:
        actual = path.stat().st_size
    except OSError:
        raise TmdError(f"{path}: missing (named by {where})") from None
    if size is not None and actual != size:
        word = "truncated" if actual < size else "larger than expected"
        raise TmdError(f"{path}: {word}: {actual} bytes, the manifest says {size} ({where})")
    if sha256 is not None and file_sha256(path) != sha256.lower():
        raise TmdError(f"{path}: sha256 mismatch: file has {file_sha256(path)[:12]}..., the manifest "
                       f"says {sha256[:12]}... ({where}); re-export or re-copy the bundle")
