"""A titled box whose text grows token by token."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ...core.display import visible


class StreamPanel(Static):
    """Text that streams in; `placeholder` shows (dimmed) until the first piece arrives."""

    DEFAULT_CSS = """
    StreamPanel { border: round $primary 60%; padding: 0 1; height: auto; min-height: 3; }
    StreamPanel.-active { border: round $accent; }
    """

    def __init__(self, title: str, placeholder: str = "", **kwargs):
        super().__init__(**kwargs)
        self.border_title = title
        self.placeholder = placeholder
        self.body = ""

    def on_mount(self) -> None:
        self.clear()

    def clear(self, placeholder: str | None = None) -> None:
        self.body = ""
        self.set_class(False, "-active")
        self.update(Text(self.placeholder if placeholder is None else placeholder, style="dim"))

    def append(self, piece: str) -> None:
        self.body += piece
        self.set_class(True, "-active")
        self.update(Text(visible(self.body)))  # model text: control codes shown, never obeyed

    def show(self, content: str | Text, active: bool = False) -> None:
        self.body = content.plain if isinstance(content, Text) else content
        self.set_class(active, "-active")
        self.update(content if isinstance(content, Text) else Text(visible(content)))
