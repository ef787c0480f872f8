"""The options, with the chosen one highlighted, the gold one marked when known, and a small bar
per option for the probability the module gives it."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ...core.display import visible
from ...core.records import Question

BAR_WIDTH, BAR_FULL = 10, "█"


class AnswerView(Static):
    DEFAULT_CSS = """
    AnswerView { border: round $success 60%; padding: 0 1; height: auto; min-height: 3; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.border_title = "Final answer"
        self.answer: str | None = None

    def on_mount(self) -> None:
        self.clear()

    def clear(self, note: str = "waiting for the reasoner") -> None:
        self.answer = None
        self.update(Text(note, style="dim"))

    def show(self, question: Question, answer: str | None, probs: dict[str, float] | None = None,
             provenance: str = "") -> None:
        self.answer = answer
        text = Text()
        for letter, option in question.options.items():
            chosen = letter == answer
            if probs and letter in probs:
                text.append(f"{BAR_FULL * round(probs[letter] * BAR_WIDTH):<{BAR_WIDTH}} "
                            f"{100 * probs[letter]:5.1f}% ", style="green" if chosen else "dim")
            line = visible(f"{'▶' if chosen else ' '} {letter}. {option}", one_line=True)
            text.append(line, style="bold reverse green" if chosen else "")
            if question.answer == letter:
                text.append("  (gold)", style="yellow")
            text.append("\n")
        if answer is None:
            text.append("no answer could be parsed from the reasoning", style="bold red")
        elif question.answer is not None:
            right = answer == question.answer
            text.append("correct" if right else "wrong", style="bold green" if right else "bold red")
        if provenance:
            text.append(f"\n{provenance}", style="dim")
        text.rstrip()  # in place
        self.update(text)
