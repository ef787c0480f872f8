"""Crash-safe files: JSONL appended record by record, JSON replaced atomically; and the one reader
of every JSON and JSONL file tmd reads (questions, manifests, results, teacher runs).

A line is only "written" once it ends in a newline and has been fsynced; a reader repairs a file
whose last line was cut by a kill, so nothing half-written is ever read back.

The reader turns anything Python's json module would choke on later into one TmdError naming the
file and line: bytes that are not UTF-8, lone surrogates ("\\ud800", which cannot be written back or
tokenized), NaN/Infinity and numbers too large for a float or too long for an int, and nesting
deeper than MAX_DEPTH (100,000 "[" would otherwise be a RecursionError).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import TmdError

MAX_DEPTH = 64  # tmd's own files nest 6 levels at most
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Invalid(ValueError):
    """Why a JSON text was refused, in words for the user."""


class JsonError(TmdError):
    """A JSON text refused by parse_json: `where` (file or file:line) and `problem` in words."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


def _constant(name: str):
    raise _Invalid(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Invalid(f"number {text[:20]}{'...' if len(text) > 20 else ''} is too large")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 1000:  # far below Python's 4300-digit limit and any real count
        raise _Invalid(f"integer with {len(text.lstrip('-'))} digits is too long")
    return int(text)


def parse_json(data: bytes | str, where: str, *, whole_file: bool = False) -> Any:
    """One JSON document -> Python values; JsonError('<where>: <why>') for anything malformed.
    `where` names a file (whole_file: positions are given as lines) or a file:line."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            at = f"line {line}" if whole_file else f"column {e.start + 1}"
            raise JsonError(where, f"not UTF-8 text (byte 0x{data[e.start]:02x} at {at}); "
                                   "save the file as UTF-8") from None
    data = data.removeprefix("\ufeff")  # a byte-order mark some editors write
    try:
        value = json.loads(data, parse_constant=_constant, parse_float=_finite_float, parse_int=_int)
    except json.JSONDecodeError as e:
        at = f"line {e.lineno}" if whole_file else f"column {e.colno}"
        raise JsonError(where, f"not valid JSON ({e.msg} at {at})") from None
    except _Invalid as e:
        raise JsonError(where, f"not valid JSON ({e})") from None
    except RecursionError:
        raise JsonError(where, f"not valid JSON (nested more than {MAX_DEPTH} levels deep)") from None
    except ValueError as e:  # e.g. Python's own integer length limit
        raise JsonError(where, f"not valid JSON ({str(e)[:80]})") from None
    problem = _text_problem(value)
    if problem:
        raise JsonError(where, problem)
    return value


def _text_problem(value: Any) -> str | None:
    """Depth and string checks over the parsed value, iteratively (no recursion to run out of)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return (f"text {_preview(item)} holds a lone surrogate (\\u{ord(_SURROGATE.search(item)[0]):04x}), "
                        "which is not a character; fix the escape")
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return f"not valid JSON (nested more than {MAX_DEPTH} levels deep)"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def _preview(text: str) -> str:
    shown = _SURROGATE.sub("?", text[:40])
    return repr(shown + ("..." if len(text) > 40 else ""))


def read_json(path: Path, what: str = "JSON file") -> Any:
    """A whole JSON file through parse_json; a missing or unreadable file is one line too."""
    path = Path(path)
    require_regular_file(path, what)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TmdError(f"{path}: cannot read ({e.strerror})") from None
    return parse_json(data, str(path), whole_file=True)


def require_regular_file(path: Path, what: str = "file") -> None:
    """Refuse, before opening, what is not a regular file: a FIFO or a device would block or never
    end (a symlink to /dev/zero hashes forever), a folder cannot be read as a file."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except ValueError:
        raise TmdError(f"{what} {str(path)!r}: the name holds a NUL byte") from None
    except FileNotFoundError:
        raise TmdError(f"{path}: no such file") from None
    except OSError as e:
        raise TmdError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise TmdError(f"{path}: is a folder, expected a {what}")
    if not stat.S_ISREG(mode):
        raise TmdError(f"{path}: not a regular file (a FIFO, socket or device), expected a {what}")


def dumps(obj: Any, path: Path, indent: int | None = None) -> str:
    """JSON text that parse_json reads back: NaN, Infinity and lone surrogates are refused here, in
    one line naming the file, instead of being written where every later reader would fail."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=indent)
    except ValueError:
        raise TmdError(f"{path}: refusing to write a record holding NaN or Infinity") from None
    if not text.isascii() and _SURROGATE.search(text):
        raise TmdError(f"{path}: refusing to write text that is not valid Unicode (a lone surrogate, "
                       "e.g. from a name that is not UTF-8)")
    return text


def append_jsonl(path: Path, record: dict) -> None:
    """One record, fsynced. A write that fails (a full disk) is cut back off the file, so the file
    holds only whole records and a rerun appends after them."""
    data = (dumps(record, path) + "\n").encode("utf-8")
    # Unbuffered: a buffered file would try the failed write again when closed, and fail again.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass  # the reader cuts a torn last line anyway
            raise write_error(e, path) from None
    finally:
        os.close(fd)


def write_error(e: OSError, path: Path) -> TmdError:
    """A failed write as one line naming the file; a full disk says that finished work is kept."""
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return TmdError(f"{path}: cannot write, out of disk space ({e.strerror}); free some and rerun the "
                        "same command: what was finished is kept")
    return TmdError(f"{path}: cannot write ({e.strerror or e})")


def read_jsonl(path: Path, repair: bool = True) -> list[Any]:
    """All complete records. A torn last line (a kill mid-write) is cut off the file with repair;
    a malformed complete line is someone's edit, so it is an error rather than silently dropped."""
    return [record for _, record in read_jsonl_numbered(path, repair)]


def read_jsonl_numbered(path: Path, repair: bool = True) -> list[tuple[int, Any]]:
    """read_jsonl's records with their line numbers, for messages naming file:line. Blank lines are
    skipped."""
    if not path.exists():
        return []
    require_regular_file(path, "JSONL file")
    data = path.read_bytes()
    records, good_end = [], 0
    for lineno, line in enumerate(_complete_lines(data), start=1):
        if line.strip():
            records.append((lineno, parse_json(line, f"{path}:{lineno}")))
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
    write_text_atomic(path, dumps(obj, path, indent=2) + "\n")


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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(e, path) from None
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


def check_output_file(path: Path, flag: str) -> None:
    """Refuse, before any work is done, an output file that could not be written: a folder, a name
    under a file, a device or FIFO, or a place where no file can be made (/proc/x, a read-only
    disk). Creates the missing parent folders, as the write itself would."""
    import stat

    path = Path(path)
    where = f"{flag} {path}"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        raise TmdError(f"{where}: a part of that path is a file, not a folder") from None
    except ValueError:
        raise TmdError(f"{flag} {str(path)!r}: the name holds a NUL byte") from None
    except OSError as e:
        raise TmdError(f"{where}: cannot use it ({e.strerror})") from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise TmdError(f"{where}: is a folder, expected a file name")
        if not stat.S_ISREG(mode):
            raise TmdError(f"{where}: not a regular file (a FIFO, socket or device)")
        try:
            with open(path, "ab"):  # appending nothing: proves it writable, changes nothing
                pass
        except OSError as e:
            raise TmdError(f"{where}: cannot write there ({e.strerror})") from None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise TmdError(f"{where}: a part of that path is a file, not a folder") from None
    except NotADirectoryError:
        raise TmdError(f"{where}: a part of that path is a file, not a folder") from None
    except OSError as e:
        raise TmdError(f"{where}: cannot write there ({e.strerror or e})") from None
