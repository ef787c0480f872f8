"""The record every dataset loader produces and every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    options: dict[str, str]  # letter -> option text, in display order
    answer: str | None = None  # gold letter, None when unknown (e.g. a user's question)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "options": dict(self.options),
                "answer": self.answer, "extra": self.extra}
