"""`--teacher` specs: `gold`, `openai:<model>`, `gguf:<path or registry name>`."""

from __future__ import annotations

from dataclasses import dataclass

from tmd_local.errors import TmdError

KINDS = ("gold", "openai", "gguf")
SPEC_HELP = "gold, openai:<model> or gguf:<path or registry name>"


@dataclass(frozen=True)
class TeacherSpec:
    kind: str  # one of KINDS
    target: str = ""  # the model name (openai) or path/registry name (gguf); "" for gold

    @property
    def label(self) -> str:
        """How the spec reads back; the name written into records may resolve further (gguf)."""
        return self.kind if self.kind == "gold" else f"{self.kind}:{self.target}"


def parse_spec(text: str) -> TeacherSpec:
    text = (text or "").strip()
    if text == "gold":
        return TeacherSpec("gold")
    kind, sep, target = text.partition(":")
    if sep and kind in ("openai", "gguf"):
        if not target.strip():
            raise TmdError(f"--teacher {text!r}: the model after '{kind}:' is missing (expected {SPEC_HELP})")
        return TeacherSpec(kind, target.strip())
    raise TmdError(f"--teacher {text!r}: unknown teacher (expected {SPEC_HELP})")
