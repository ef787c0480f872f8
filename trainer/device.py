"""Where and how a training runs: the device, the precision `auto` resolves to, torch's threads,
the malloc setting of --low-memory, and the autocast context of a precision."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import torch

from tmd_local.core.errors import TmdError

from .config import TrainConfig
from .distributed import Ranks, available_cores


def pick_device(cfg: TrainConfig, ranks: Ranks = Ranks()) -> tuple[torch.device, str]:
    """The device and the precision this run really uses (`auto` resolved the same way on the
    same machine every time, so a resumed run finds the precision its checkpoint recorded)."""
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise TmdError("training config: device='cuda': no CUDA device is available here")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and cuda)
    device = torch.device(f"cuda:{ranks.local_rank}" if use_cuda else "cpu")
    precision = cfg.precision
    if precision == "auto":
        if device.type == "cpu":
            precision = "bf16" if cpu_has_bf16_units() else "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise TmdError("training config: precision='fp16': needs CUDA (use fp32 or bf16 on CPU)")
    return device, precision


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16_units(flags: set[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), read from the kernel's
    CPU flags. torch has no query for it (torch.backends.cpu.get_cpu_capability() says AVX512, not
    which extensions), and without those units PyTorch emulates bf16 matmuls: on an AVX2-only VM
    a 1024x1024 bf16 matmul ran at 1 GFLOPS against fp32's 59, so `auto` must not pick bf16 there."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags, so fp32
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def set_threads(cfg: TrainConfig, ranks: Ranks = Ranks()) -> int:
    """One intra-op thread per core this process may use (shared out among the machine's ranks);
    one inter-op thread (the loop is serial)."""
    threads = cfg.threads or max(1, available_cores() // ranks.local_world)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (a second module under --all)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return threads


# glibc's malloc raises its mmap threshold each time a large block is freed, after which a freed
# activation tensor stays in the heap instead of going back to the system: a Reasoner step at
# batch 2 x 512 then peaked at 5.5 GB RSS instead of 3.5 (1.4 instead of 3.9 with activation
# checkpointing). A fixed threshold (M_MMAP_THRESHOLD, which also stops the raising) keeps every
# tensor of 1 MiB or more in its own mapping, returned when freed; the price is a page fault per
# page of every such tensor: 3 steps took 52 s instead of 40 (interleaved, shared cores). Hence
# opt-in (--low-memory).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def return_freed_memory() -> bool:
    """Have glibc give large freed blocks back to the system; False where that is not glibc."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def autocast_for(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)
