"""Crash-safe files: JSONL appended record by record, JSON replaced atomically.

A line is only "written" once it ends in a newline and has been fsynced; a reader repairs a file
whose last line was cut by a kill, so nothing half-written is ever read back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import TmdError


def append_jsonl(path: Path, record: dict) -> None:
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path, repair: bool = True) -> list[dict]:
    """All complete records. A torn last line (a kill mid-write) is cut off the file with repair;
    a malformed complete line is someone's edit, so it is an error rather than silently dropped."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, good_end = [], 0
    for lineno, line in enumerate(_complete_lines(data), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise TmdError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove that line") from None
        good_end += len(line) + 1
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def _complete_lines(data: bytes) -> Iterator[bytes]:
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        yield data[start:end]
        start = end + 1


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staged_dir(staging: Path, target: Path) -> Iterator[Path]:
    """Fill `staging`, then swap it in as `target` in one rename; on any failure remove it, so a
    folder at `target` is always complete."""
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
