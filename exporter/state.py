"""The exporter's resume state (`<bundle>/.tmd-export/state.json`) and its crash-safe file writing.

state.json records each finished file with a fingerprint of its inputs, its size and sha256 (and
what the read-back found in it), and each verification with the key of what it compared; a rerun
skips whatever still matches. Every file is written under a temporary name beside its final one
and renamed when complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tmd_local.core.errors import TmdError
from tmd_local.core.gguf_file import read_gguf_info
from tmd_local.core.jsonl import read_json, write_json_atomic
from tmd_local.core.registry import file_sha256

STATE_DIR = ".tmd-export"
STATE_VERSION = 1


def fingerprint(*parts: Any) -> str:
    """sha256 over the JSON of each part: what a file or check was made from."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def disk_error(e: OSError, where: Path) -> TmdError | None:
    """A full disk or an unwritable folder as a one-line error; None for other OSErrors."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # EFBIG: a file-size limit (ulimit -f)
        return TmdError(f"{where}: out of disk space; free some and rerun (finished files are kept)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TmdError(f"{where}: cannot write ({e.strerror})")
    return None


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic(final: Path) -> Iterator[Path]:
    """A temp path beside `final` (not ending in .gguf); renamed onto `final` when the body is done."""
    tmp = final.with_name(f".{final.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, final) or e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# A record's fields that a rerun and the manifest read, with their JSON types.
_RECORD_FIELDS = {"fingerprint": str, "size": int, "sha256": str, "seconds": (int, float), "file_type": str,
                  "bits_per_weight": (int, float), "tensor_types": dict, "chat_template_sha256": (str, type(None)),
                  "eos_token_ids": list, "tmd": dict, "general_type": str}


def read_state(path: Path) -> dict:
    """state.json, or a fresh state when there is none (or it is of another version). It is only
    ever replaced atomically, so a damaged one was edited by hand: one line naming the file and
    field, rather than a traceback or a silent redo of hours of work."""
    fresh = {"version": STATE_VERSION, "files": {}, "verify": {}}
    if not path.exists():
        return fresh
    hint = "; delete it to redo the export's steps (finished files are checked again)"
    try:
        data = read_json(path, "export state file")
    except TmdError as e:
        raise TmdError(f"{e}{hint}") from None
    if not isinstance(data, dict):
        raise TmdError(f"{path}: expected a JSON object, got {type(data).__name__}{hint}")
    if data.get("version") != STATE_VERSION:
        return fresh
    for key in ("files", "verify"):
        if not isinstance(data.get(key), dict):
            raise TmdError(f"{path}: field '{key}': expected an object{hint}")
    for name, rec in data["files"].items():
        for field, kind in _RECORD_FIELDS.items():
            value = rec.get(field) if isinstance(rec, dict) else None
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TmdError(f"{path}: field 'files.{name}.{field}': unexpected value {value!r:.40}{hint}")
    return data


class ExportState:
    """state.json of one bundle folder: finished files (keyed by their path in the bundle) and
    verification results (keyed by their label)."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / STATE_DIR / "state.json"
        self.data = read_state(self.path)

    @property
    def files(self) -> dict[str, dict]:
        return self.data["files"]

    @property
    def verify(self) -> dict[str, dict]:
        return self.data["verify"]

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def key(self, path: Path) -> str:
        return str(path.relative_to(self.out))

    def record_of(self, path: Path) -> dict:
        return self.files[self.key(path)]

    def is_done(self, path: Path, fp: str) -> bool:
        """The file exists as recorded (size and sha256) and was made from the same inputs."""
        rec = self.files.get(self.key(path))
        if not rec or rec.get("fingerprint") != fp or not path.is_file():
            return False
        return path.stat().st_size == rec["size"] and file_sha256(path) == rec["sha256"]

    def record_file(self, path: Path, fp: str, seconds: float) -> dict:
        """Read the finished GGUF back and record what it really holds."""
        info = read_gguf_info(path)
        rec = {"fingerprint": fp, "size": path.stat().st_size, "sha256": file_sha256(path),
               "seconds": round(seconds, 2), "file_type": info.file_type,
               "bits_per_weight": round(info.bits_per_weight, 4), "tensor_types": info.tensor_types,
               "n_elements": info.n_elements, "chat_template_sha256": info.chat_template_sha256,
               "eos_token_ids": info.eos_token_ids, "tmd": info.tmd, "general_type": info.general_type,
               "lora_alpha": info.lora_alpha}
        self.files[self.key(path)] = rec
        self.save()
        return rec

    def file_entry(self, path: Path) -> dict:
        """A manifest `files` entry for a recorded file (docs/FORMATS.md section 5)."""
        rec = self.record_of(path)
        return {"file": path.name, "size": rec["size"], "sha256": rec["sha256"],
                "file_type": rec["file_type"], "bits_per_weight": rec["bits_per_weight"],
                "tensor_types": rec["tensor_types"], "chat_template_sha256": rec["chat_template_sha256"],
                "eos_token_ids": rec["eos_token_ids"], "tmd": rec["tmd"]}

    def file_rows(self, listed: set[str]) -> list[dict]:
        """One row per listed file that exists (the CLI's summary table)."""
        rows = []
        for key, rec in self.files.items():
            if key not in listed or not (self.out / key).is_file():
                continue
            rows.append({"file": key, **{k: rec[k] for k in ("size", "file_type", "bits_per_weight",
                                                              "tensor_types", "seconds", "general_type")}})
        rows.sort(key=lambda r: r["file"])
        return rows
