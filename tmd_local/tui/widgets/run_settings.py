"""What to run: the bundle or model, its quantization, TMD or DRD, and an optional second target."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, Select

from ...runtime.bundle import Bundle

SYSTEM_CHOICES = [("TMD", "tmd"), ("DRD", "drd")]


class RunSettings(Vertical):
    DEFAULT_CSS = """
    RunSettings { height: auto; }
    RunSettings Horizontal { height: auto; }
    RunSettings Select { width: 1fr; }
    RunSettings Label { color: $text-muted; }
    """

    class SourceChosen(Message):
        """The user entered a bundle folder, model name or GGUF path."""

        def __init__(self, text: str):
            super().__init__()
            self.text = text

    def __init__(self, suggestions: list[str] | None = None, system: str = "tmd", **kwargs):
        super().__init__(**kwargs)
        self.suggestions = suggestions or []
        self._system = system

    def compose(self) -> ComposeResult:
        yield Label("Bundle or model (Enter to load)")
        yield Input(id="source", placeholder="models/<bundle> or a .gguf path",
                    suggester=SuggestFromList(self.suggestions, case_sensitive=False))
        with Horizontal():
            yield Select([("-", "-")], id="quant", allow_blank=False, prompt="quant")
            yield Select(SYSTEM_CHOICES, id="system", allow_blank=False, value=self._system)
        yield Label("Compare with (a quant, bundle or .gguf)")
        yield Input(id="compare", placeholder="empty: no comparison")

    def set_bundle(self, bundle: Bundle, quant: str | None = None, source_text: str | None = None) -> None:
        select = self.query_one("#quant", Select)
        choices = bundle.choices()
        if quant and quant not in choices:  # a per-module mix (--quant f16,reasoner=q4_k_m, --memory-budget)
            choices.append(quant)
        select.set_options([(q, q) for q in choices])
        select.value = quant if quant in choices else bundle.default_quant
        if source_text is not None:
            self.query_one("#source", Input).value = source_text

    @property
    def quant(self) -> str:
        return str(self.query_one("#quant", Select).value)

    @property
    def system(self) -> str:
        return str(self.query_one("#system", Select).value)

    @system.setter
    def system(self, value: str) -> None:
        self.query_one("#system", Select).value = value

    @property
    def compare_text(self) -> str:
        return self.query_one("#compare", Input).value

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "source":
            event.stop()
            self.post_message(self.SourceChosen(event.value.strip()))
