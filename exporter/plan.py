"""What an export will do, decided before anything runs: `plan(request) -> [Step]`.

One pure function of the options, used three times: the progress bar's step count, the free-space
estimate, and the execution itself (exporter/export.py walks the steps in order). No file system,
no torch: a plan can be printed or tested without a model.

Order (the state file and the progress lines follow it): the converter; the base model's GGUFs when
the bundle needs them; then per fine-tuned role the steps of its mode; last the zero-shot roles'
checks against the base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tmd_local.core.quants import BY_NAME, FLOAT_TYPES

LORA_OUTTYPE = "f16"
LORA_BYTES = 50e6  # a LoRA GGUF of a small model, generously


class Mode(str, Enum):
    """What a fine-tuned role is shipped as (`tmd export --mode`)."""
    MERGED = "merged"    # its own merged GGUFs
    ADAPTER = "adapter"  # base GGUFs + a LoRA GGUF
    BOTH = "both"        # merged GGUFs, and the LoRA as an alternative form

    @property
    def merges(self) -> bool:
        return self in (Mode.MERGED, Mode.BOTH)

    @property
    def ships_lora(self) -> bool:
        return self in (Mode.ADAPTER, Mode.BOTH)


@dataclass(frozen=True)
class Step:
    """One unit of work. `role` is the role whose manifest entry it serves ("base" for the base
    model's own files, "setup" for the converter); `action` one of ACTIONS."""
    role: str
    action: str
    target: str                 # the file written (or checked), or what is made
    quant: str | None = None
    kind: str | None = None     # verify/record: "merged", "base+lora" or "base" (what the file is)
    source: str | None = None   # quantize: the f16 file it is made from; base+lora checks: the LoRA
    in_work: bool = False       # an intermediate kept in .tmd-export/work/, removed at the end
    in_memory: bool = False     # merge: only in memory, as the reference for adapter-mode checks

    @property
    def shown(self) -> bool:
        """Whether it is a progress line ("record" only builds a manifest entry, unverified)."""
        return self.action != "record"

    def disk_bytes(self, n_params: int) -> float:
        """Rough bytes it writes, for the free-space check."""
        if self.action == "convert" and self.quant == "f16":
            return n_params * 2 * 2  # the f16 file and the converter's scratch copy
        if self.action in ("convert", "quantize"):
            return n_params * BY_NAME[self.quant].bits / 8
        if self.action == "merge" and not self.in_memory:
            return n_params * 4  # the merged fp32 HF model
        if self.action == "lora":
            return LORA_BYTES
        return 0.0


ACTIONS = ("converter", "convert", "quantize", "merge", "lora", "verify", "record")


@dataclass(frozen=True)
class Request:
    """Everything the plan depends on, already validated."""
    mode: Mode
    quants: tuple[str, ...]          # canonical names, f16 first when asked for
    adapter_roles: tuple[str, ...]   # roles with a fine-tuned adapter, in ROLES order
    zero_shot: tuple[str, ...]       # roles exported as base-model files
    verify: bool
    base_files: bool                 # whether the bundle needs base.<quant>.gguf files


def plan(request: Request) -> list[Step]:
    steps = [Step("setup", "converter", "llama.cpp")]
    if request.base_files:
        steps += gguf_steps("base", "base", request.quants)
    for role in request.adapter_roles:
        steps += MODE_PLANS[request.mode](role, request)
    for role in request.zero_shot:
        steps += check_steps(role, "base", request, lambda q: f"base.{q}.gguf")
    return steps


def gguf_steps(role: str, stem: str, quants: tuple[str, ...]) -> list[Step]:
    """<stem>.<quant>.gguf for every quant: f16 first (an intermediate in work/ when not asked
    for), the other float types converted, the rest quantized from the f16."""
    f16 = f"{stem}.f16.gguf"
    steps = [Step(role, "convert", f16, "f16", in_work="f16" not in quants)]
    for q in quants:
        if q == "f16":
            continue
        target = f"{stem}.{q}.gguf"
        if q in FLOAT_TYPES:
            steps.append(Step(role, "convert", target, q))
        else:
            steps.append(Step(role, "quantize", target, q, source=f16))
    return steps


def check_steps(role: str, kind: str, request: Request, file_of, lora: str | None = None) -> list[Step]:
    """One check per quant of the file `file_of(quant)` (+ the LoRA); a bare record without --verify."""
    action = "verify" if request.verify else "record"
    return [Step(role, action, file_of(q), q, kind=kind, source=lora) for q in request.quants]


def lora_file(role: str) -> str:
    return f"{role}.lora.gguf"


def merged_steps(role: str, request: Request) -> list[Step]:
    return [Step(role, "merge", f"merged/{role}"), *gguf_steps(role, role, request.quants),
            *check_steps(role, "merged", request, lambda q: f"{role}.{q}.gguf")]


def lora_steps(role: str, request: Request, reference_merge: bool) -> list[Step]:
    steps = [Step(role, "lora", lora_file(role), LORA_OUTTYPE)]
    if reference_merge and request.verify:
        steps.append(Step(role, "merge", f"merged/{role}", in_memory=True))
    return steps + check_steps(role, "base+lora", request, lambda q: f"base.{q}.gguf", lora_file(role))


def adapter_plan(role: str, request: Request) -> list[Step]:
    return lora_steps(role, request, reference_merge=True)


def both_plan(role: str, request: Request) -> list[Step]:
    return merged_steps(role, request) + lora_steps(role, request, reference_merge=False)


MODE_PLANS = {Mode.MERGED: merged_steps, Mode.ADAPTER: adapter_plan, Mode.BOTH: both_plan}


def step_count(steps: list[Step]) -> int:
    return sum(step.shown for step in steps)


def space_needed(steps: list[Step], n_params: int) -> float:
    return sum(step.disk_bytes(n_params) for step in steps)
