"""Quant names -> how they are made: the converter writes the float types, llama.cpp quantizes the rest.

Quantization calls llama.cpp's own `llama_model_quantize` through llama-cpp-python's ctypes binding,
from the f16 file. No torch here.
"""

from __future__ import annotations

import ctypes
import time
from contextlib import contextmanager
from pathlib import Path

from tmd_local.core.errors import TmdError
from tmd_local.core.quants import BY_NAME  # the quant table: names, llama_ftype codes, bits per weight


def quantize(src: Path, dst: Path, quant: str, threads: int | None = None,
             log_path: Path | None = None) -> float:
    """Quantize the GGUF `src` to `dst` with llama.cpp; its log goes to `log_path`. Returns seconds."""
    if quant not in BY_NAME or BY_NAME[quant].made_by != "quantize":
        made = ", ".join(q for q, info in BY_NAME.items() if info.made_by == "quantize")
        raise TmdError(f"{quant}: not a llama.cpp quantization type ({made})")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = BY_NAME[quant].ftype
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
