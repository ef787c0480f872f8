"""`--teacher` specs: `gold`, `openai:<model>`, `gguf:<path or registry name>`."""

from __future__ import annotations

from dataclasses import dataclass

from tmd_local.core.errors import TmdError

KINDS = ("gold", "openai", "gguf")
# What the gold teacher's Reasoner learns to write: the recorded ChatGPT rationale (the same text DRD
# learns, with the gold subquestions and facts as input: KARD's setup), or numbered steps built from
# the human facts, or (`answer`) only the final answer line for both Reasoner and DRD: the
# answer-only floor (DRD) and a Reasoner that answers straight from subquestions and knowledge.
# `gold` alone means the default, and records always carry the resolved label.
GOLD_REASONER_TARGETS = ("rationale", "facts", "answer")
GOLD_DEFAULT_REASONER = "rationale"
SPEC_HELP = "gold, gold:rationale, gold:facts, gold:answer, openai:<model> or gguf:<path or registry name>"


@dataclass(frozen=True)
class TeacherSpec:
    kind: str  # one of KINDS
    target: str = ""  # the model name (openai), path/registry name (gguf) or Reasoner target (gold)

    @property
    def label(self) -> str:
        """How the spec reads back; the name written into records may resolve further (gguf)."""
        return f"{self.kind}:{self.target}"


def parse_spec(text: str) -> TeacherSpec:
    text = (text or "").strip()
    if text == "gold":
        return TeacherSpec("gold", GOLD_DEFAULT_REASONER)
    kind, sep, target = text.partition(":")
    if kind == "gold":
        if target not in GOLD_REASONER_TARGETS:
            raise TmdError(f"--teacher {text!r}: the gold teacher's Reasoner target is one of "
                           f"{', '.join(GOLD_REASONER_TARGETS)}")
        return TeacherSpec("gold", target)
    if sep and kind in ("openai", "gguf"):
        if not target.strip():
            raise TmdError(f"--teacher {text!r}: the model after '{kind}:' is missing (expected {SPEC_HELP})")
        return TeacherSpec(kind, target.strip())
    raise TmdError(f"--teacher {text!r}: unknown teacher (expected {SPEC_HELP})")
