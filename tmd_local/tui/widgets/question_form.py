"""The question and its options, typed by the user or filled from a dataset."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label, TextArea

from ...core.records import Question
from ..session import make_question, options_text


class QuestionForm(Vertical):
    DEFAULT_CSS = """
    QuestionForm { height: auto; }
    QuestionForm TextArea { height: 6; }
    QuestionForm Label { color: $text-muted; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._gold: str | None = None
        self._qid: str | None = None
        self._loaded_text: tuple[str, str] | None = None

    def compose(self) -> ComposeResult:
        yield Label("Question")
        yield Input(placeholder="There is most likely going to be fog around:", id="question")
        yield Label("Options, one per line")
        yield TextArea("", id="options", soft_wrap=True, show_line_numbers=False)

    def question(self) -> Question:
        """The form as a Question; TmdError (shown as a notification) when it is incomplete."""
        text = self.query_one("#question", Input).value
        options = self.query_one("#options", TextArea).text
        unchanged = self._loaded_text == (text, options)
        return make_question(text, options, gold=self._gold if unchanged else None,
                             qid=self._qid if unchanged else None)

    def fill(self, question: Question) -> None:
        self.query_one("#question", Input).value = question.question
        self.query_one("#options", TextArea).text = options_text(question)
        self._gold, self._qid = question.answer, question.id
        self._loaded_text = (question.question, options_text(question))
