"""Pick a question from a benchmark split (local files only: the app works offline)."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, Select
from textual.widgets.option_list import Option

from ...core.datasets import DATASETS, SPLITS, load_questions
from ...core.display import visible
from ...core.errors import TmdError
from ...core.records import Question

LIMIT = 500


class DatasetScreen(ModalScreen[Question | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    DatasetScreen { align: center middle; }
    DatasetScreen > Vertical { width: 110; max-width: 95%; height: 80%; border: thick $accent;
                               background: $surface; padding: 0 1; }
    DatasetScreen Horizontal { height: auto; }
    DatasetScreen Select { width: 24; }
    DatasetScreen OptionList { height: 1fr; }
    """

    def __init__(self, dataset: str = "strategyqa", split: str = "test"):
        super().__init__()
        self.dataset, self.split = dataset, split
        self.questions: list[Question] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Pick a question (first {LIMIT} of the split); Enter to use it, Esc to cancel")
            with Horizontal():
                yield Select([(d, d) for d in DATASETS], value=self.dataset, allow_blank=False, id="dataset")
                yield Select([(s, s) for s in SPLITS], value=self.split, allow_blank=False, id="split")
                yield Button("Load", id="load")
            yield OptionList(id="questions")

    def on_mount(self) -> None:
        self.load()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "load":
            self.dataset = str(self.query_one("#dataset", Select).value)
            self.split = str(self.query_one("#split", Select).value)
            self.load()

    @work(thread=True, exclusive=True, group="dataset", exit_on_error=False)
    def load(self) -> None:
        try:
            questions, _ = load_questions(self.dataset, self.split, limit=LIMIT, hub=False)
        except Exception as e:  # TmdError or a bug: one line in a notification, never a traceback
            message = str(e) if isinstance(e, TmdError) else f"{type(e).__name__}: {e}"
            self.app.call_from_thread(self.app.notify, message, title="dataset", severity="error")
            questions = []
        self.app.call_from_thread(self._show, questions)

    def _show(self, questions: list[Question]) -> None:
        self.questions = questions
        options = self.query_one("#questions", OptionList)
        options.clear_options()
        options.add_options([Option(Text(visible(f"{q.id}: {q.question}", one_line=True))) for q in questions])
        if questions:
            options.highlighted = 0
            options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.questions[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)
