"""Quant names -> how they are made: the converter writes the float types, llama.cpp quantizes the rest.

Quantization calls llama.cpp's own `llama_model_quantize` through llama-cpp-python's ctypes binding,
from the f16 file. No torch here.
"""

from __future__ import annotations

import ctypes
import time
from contextlib import contextmanager
from pathlib import Path

from tmd_local.errors import TmdError

# Written by convert_hf_to_gguf.py (--outtype).
FLOAT_TYPES = ("f32", "f16", "bf16")
# llama_ftype codes for llama_model_quantize. The i-quants need an importance matrix, and the
# ternary types a ternary model, so they are not offered.
QUANT_FTYPES = {"q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11,
                "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17,
                "q6_k": 18}
SUPPORTED = FLOAT_TYPES + tuple(QUANT_FTYPES)
# Rough bits per weight, only for the free-space estimate before an export starts.
NOMINAL_BPW = {"f32": 32, "f16": 16, "bf16": 16, "q8_0": 8.5, "q6_k": 8.5, "q5_0": 6, "q5_1": 6.5,
               "q5_k_s": 6.5, "q5_k_m": 7, "q4_0": 5, "q4_1": 5.5, "q4_k_s": 6, "q4_k_m": 6.5,
               "q3_k_s": 5.5, "q3_k_m": 5.5, "q3_k_l": 6, "q2_k": 5}


def parse_quants(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """'f16,q8_0,Q4_K_M' -> ['f16', 'q8_0', 'q4_k_m']: known names, no repeats, f16 first if given."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [s.strip().lower().replace("-", "_") for s in items if s.strip()]
    if not names:
        raise TmdError("--quant: expected at least one type, e.g. --quant f16,q8_0,q4_k_m")
    unknown = [n for n in names if n not in SUPPORTED]
    if unknown:
        raise TmdError(f"--quant {unknown[0]}: unsupported quant type (supported: {', '.join(SUPPORTED)})")
    ordered = list(dict.fromkeys(names))
    if "f16" in ordered:
        ordered.remove("f16")
        ordered.insert(0, "f16")
    return ordered


def quantize(src: Path, dst: Path, quant: str, threads: int | None = None,
             log_path: Path | None = None) -> float:
    """Quantize the GGUF `src` to `dst` with llama.cpp; its log goes to `log_path`. Returns seconds."""
    if quant not in QUANT_FTYPES:
        raise TmdError(f"{quant}: not a llama.cpp quantization type ({', '.join(QUANT_FTYPES)})")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.nthread = int(threads or 0)  # <= 0: llama.cpp uses every core
    started = time.perf_counter()
    with captured_llama_log() as lines:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("".join(lines), encoding="utf-8")
    if rc != 0:
        errors = [ln.strip() for ln in "".join(lines).splitlines() if "error" in ln.lower()]
        raise TmdError(f"llama.cpp could not quantize {src.name} to {quant} (llama_model_quantize "
                       f"returned {rc}{': ' + errors[-1] if errors else ''}); check the free space "
                       f"in {dst.parent}" + (f" (log: {log_path})" if log_path else ""))
    return time.perf_counter() - started


@contextmanager
def captured_llama_log():
    """Collect llama.cpp's log instead of printing it: quantizing logs every tensor and every
    256-block fallback (llama-cpp-python's own callback maps this ggml's WARN level to ERROR, so
    set_verbose(False) does not silence it). The read-back histogram records what the fallbacks did."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
