"""Resident memory of this process, memory budgets, and what a GGUF module will cost before loading it.

Figures in MB are MiB (2**20 bytes), as /proc reports them; budgets given in decimal units
(600MB = 600 * 10**6 bytes) are converted exactly.
"""

from __future__ import annotations

import re
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import TmdError
from .gguf_file import read_gguf_header

MIB = 1 << 20


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else peak_rss_mb()


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark so the next peak_rss_mb() covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (1024 * 1024) if sys.platform == "darwin" else usage / 1024


def release_freed() -> bool:
    """Hand memory freed by closed modules back to the OS (glibc keeps freed heap pages otherwise,
    about 40 MiB after a SmolLM2-135M context is freed). False where there is no glibc."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


# --- sizes -----------------------------------------------------------------------------------

_UNITS = {"": None, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "T": 10**12, "TB": 10**12, "TIB": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.I)


def parse_size(text: str) -> int:
    """'600MB', '1.5GiB', '512 KiB' -> bytes. Decimal units are powers of 1000, *iB of 1024."""
    m = _SIZE.match(str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise TmdError(f"memory size {text!r}: expected a number and a unit, e.g. 600MB, 1.5GB, 800MiB")
    if _UNITS[unit] is None:
        raise TmdError(f"memory size {text!r}: add a unit, e.g. {text}MB or {text}MiB")
    return int(float(m.group(1)) * _UNITS[unit])


def format_mb(n_bytes: float) -> str:
    return f"{n_bytes / MIB:.0f} MiB"


# --- footprint -------------------------------------------------------------------------------

# Measured on the embedded SmolLM2-135M (Q4_1, llama.cpp via llama-cpp-python 0.3.36, CPU): peak RSS
# of a fresh process minus its RSS before loading, minus the file, the KV cache and the attention
# scratch, was 25-36 MiB across n_ctx 512-8192 and prompts of 60-3000 tokens (scripts/bench/residency.py
# re-measures it). The attention scratch (n_head x n_ctx x n_batch floats) is what grows with prompts.
FIXED_OVERHEAD_BYTES = 36 * MIB


@dataclass(frozen=True)
class Footprint:
    """What loading one module is expected to add to this process's resident memory."""
    file_bytes: int
    kv_bytes: int
    scratch_bytes: int
    overhead_bytes: int = FIXED_OVERHEAD_BYTES
    adapter_bytes: int = 0
    n_ctx: int = 0

    @property
    def total_bytes(self) -> int:
        return self.file_bytes + self.adapter_bytes + self.kv_bytes + self.scratch_bytes + self.overhead_bytes

    def describe(self) -> str:
        parts = [f"file {format_mb(self.file_bytes)}"]
        if self.adapter_bytes:
            parts.append(f"adapter {format_mb(self.adapter_bytes)}")
        parts += [f"KV cache {format_mb(self.kv_bytes)} for n_ctx {self.n_ctx}",
                  f"scratch + overhead {format_mb(self.scratch_bytes + self.overhead_bytes)}"]
        return " + ".join(parts)


def estimate_footprint(path: Path, n_ctx: int, n_batch: int | None = None,
                       adapter: Path | None = None) -> Footprint:
    """File size + f16 KV cache for n_ctx (from the GGUF's layer/head dims) + measured overhead."""
    header = read_gguf_header(path)
    arch = header.get("general.architecture")
    try:
        n_layer = int(header[f"{arch}.block_count"])
        n_embd = int(header[f"{arch}.embedding_length"])
        n_head = _first(header[f"{arch}.attention.head_count"])
    except (KeyError, TypeError, ValueError):
        raise TmdError(f"{path}: GGUF lacks the {arch}.block_count/embedding_length/attention.head_count "
                       "metadata needed to size its KV cache") from None
    try:
        n_head_kv = _first(header.get(f"{arch}.attention.head_count_kv", n_head))
        head_k = int(header.get(f"{arch}.attention.key_length", n_embd // n_head))
        head_v = int(header.get(f"{arch}.attention.value_length", n_embd // n_head))
    except (TypeError, ValueError, ZeroDivisionError):
        raise TmdError(f"{path}: GGUF header is truncated or corrupt (attention head metadata)") from None
    n_batch = n_batch or min(512, n_ctx)
    kv = n_layer * n_ctx * n_head_kv * (head_k + head_v) * 2  # f16 K and V
    scratch = n_head * n_ctx * n_batch * 4  # one layer's attention scores for a full batch
    return Footprint(file_bytes=path.stat().st_size, kv_bytes=kv, scratch_bytes=scratch,
                     adapter_bytes=adapter.stat().st_size if adapter else 0, n_ctx=n_ctx)


def _first(value) -> int:
    """Per-layer head counts come as arrays in some architectures; the largest one sizes the cache."""
    return int(max(value)) if isinstance(value, list) else int(value)


@dataclass(frozen=True)
class MemoryBudget:
    """A ceiling on this process's resident memory (None = unlimited)."""
    limit_bytes: int | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str | None) -> "MemoryBudget":
        return cls(parse_size(text), text) if text else cls()

    @property
    def limit_mb(self) -> float | None:
        return None if self.limit_bytes is None else self.limit_bytes / MIB

    def fits(self, footprint: Footprint, resident_mb: float) -> bool:
        return self.limit_bytes is None or resident_mb * MIB + footprint.total_bytes <= self.limit_bytes

    def check(self, what: str, footprint: Footprint, resident_mb: float) -> None:
        """Refuse, in one line naming the figure needed, a load that would exceed the budget."""
        if self.fits(footprint, resident_mb):
            return
        need = resident_mb * MIB + footprint.total_bytes
        raise TmdError(
            f"--max-memory {self.text or format_mb(self.limit_bytes)}: loading {what} needs about "
            f"{format_mb(footprint.total_bytes)} ({footprint.describe()}) on top of "
            f"{resident_mb:.0f} MiB in use = {format_mb(need)}, over the budget of "
            f"{format_mb(self.limit_bytes)}; raise it to at least {need / MIB + 1:.0f}MiB "
            "or lower --n-ctx")
