"""Every quantization type tmd knows, in one table. Torch-free; read by the exporter (what to make,
how), the GGUF reader (file_type codes), bundles (which quant to prefer) and results (mix labels).

Per type: `ftype`, llama.cpp's llama_ftype code (what `general.file_type` holds and what
llama_model_quantize takes); `bits`, a rough bits per weight used only for the free-space estimate
before an export (small models fall back to wider types, so the real figure is read back from the
file); `made_by`, llama.cpp's HF converter (float types) or its quantizer (from the f16 file).
The i-quants need an importance matrix and the ternary types a ternary model, so neither is offered.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import TmdError


@dataclass(frozen=True)
class Quant:
    name: str
    ftype: int
    bits: float
    made_by: str  # "converter" (convert_hf_to_gguf.py --outtype) or "quantize" (llama_model_quantize)


# Most precise first: the order is the precision rank (a tie between two quants goes to the earlier).
QUANTS: tuple[Quant, ...] = (
    Quant("f32", 0, 32, "converter"),
    Quant("bf16", 32, 16, "converter"),
    Quant("f16", 1, 16, "converter"),
    Quant("q8_0", 7, 8.5, "quantize"),
    Quant("q6_k", 18, 8.5, "quantize"),
    Quant("q5_k_m", 17, 7, "quantize"),
    Quant("q5_k_s", 16, 6.5, "quantize"),
    Quant("q5_1", 9, 6.5, "quantize"),
    Quant("q5_0", 8, 6, "quantize"),
    Quant("q4_k_m", 15, 6.5, "quantize"),
    Quant("q4_k_s", 14, 6, "quantize"),
    Quant("q4_1", 3, 5.5, "quantize"),
    Quant("q4_0", 2, 5, "quantize"),
    Quant("q3_k_l", 13, 6, "quantize"),
    Quant("q3_k_m", 12, 5.5, "quantize"),
    Quant("q3_k_s", 11, 5.5, "quantize"),
    Quant("q2_k", 10, 5, "quantize"),
)
BY_NAME = {q.name: q for q in QUANTS}
FILE_TYPES = {q.ftype: q.name for q in QUANTS}  # general.file_type code -> name
SUPPORTED = tuple(q.name for q in QUANTS)
FLOAT_TYPES = tuple(q.name for q in QUANTS if q.made_by == "converter")
# The quant a bundle runs in when none is asked for: the first of these it has. Small enough for
# laptops and close to f16 in quality first; the float types only when nothing quantized exists.
PREFERENCE = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_1", "q4_0", "f16", "bf16", "f32")


def canonical(name: str) -> str:
    """The one spelling of a quant name: 'Q4_K_M', 'q4-k-m' and ' q4_k_m ' are all 'q4_k_m'.
    Unknown names come back normalized too; `known` says whether the table has them."""
    return name.strip().lower().replace("-", "_")


def known(name: str) -> bool:
    return name in BY_NAME


def precision_rank(name: str) -> int:
    """0 for the most precise type; unknown names rank after every known one."""
    return next((i for i, q in enumerate(QUANTS) if q.name == name), len(QUANTS))


def preferred(available) -> str | None:
    """The first of PREFERENCE among `available`, else None."""
    return next((q for q in PREFERENCE if q in available), None)


def file_type_name(code: int) -> str:
    """A GGUF `general.file_type` code as a quant name ('type-<n>' for codes outside the table)."""
    return FILE_TYPES.get(code, f"type-{code}")


def parse_quant_list(spec: str | list[str] | tuple[str, ...], flag: str = "--quant") -> list[str]:
    """'f16,q8_0,Q4_K_M' -> ['f16', 'q8_0', 'q4_k_m']: known names, no repeats, f16 first if given."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [canonical(s) for s in items if s.strip()]
    if not names:
        raise TmdError(f"{flag}: expected at least one type, e.g. {flag} f16,q8_0,q4_k_m")
    unknown = [n for n in names if not known(n)]
    if unknown:
        raise TmdError(f"{flag} {unknown[0]}: unsupported quant type (supported: {', '.join(SUPPORTED)})")
    ordered = list(dict.fromkeys(names))
    if "f16" in ordered:
        ordered.remove("f16")
        ordered.insert(0, "f16")
    return ordered

