"""The questions asked in this session; selecting one shows its traces again."""

from __future__ import annotations

from textual.message import Message
from textual.widgets import Label, ListItem, ListView

from ...core.display import visible
from ..session import RunRecord


class HistoryList(ListView):
    DEFAULT_CSS = """
    HistoryList { height: 1fr; min-height: 3; border: round $primary 40%; }
    """

    class Picked(Message):
        def __init__(self, record: RunRecord):
            super().__init__()
            self.record = record

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.border_title = "History"
        self.records: list[RunRecord] = []

    def add(self, record: RunRecord) -> None:
        self.records.append(record)
        self.append(ListItem(Label(visible(record.summary(), one_line=True), markup=False)))

    def refresh_record(self, record: RunRecord) -> None:
        index = self.records.index(record)
        self.children[index].query_one(Label).update(visible(record.summary(), one_line=True))

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        index = self.index
        if index is not None and 0 <= index < len(self.records):
            self.post_message(self.Picked(self.records[index]))
