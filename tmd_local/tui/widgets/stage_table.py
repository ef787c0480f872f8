"""Per-stage figures: how the module got into memory, times, tokens, tok/s and peak RSS."""

from __future__ import annotations

from textual.widgets import DataTable

from ...runtime.pipeline import StageRecord

COLUMNS = ("run", "stage", "how", "load s", "gen s", "in tok", "out tok", "tok/s", "peak MiB")


class StageTable(DataTable):
    DEFAULT_CSS = """
    StageTable { height: auto; max-height: 10; }
    """

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.add_columns(*COLUMNS)

    def add_record(self, run: str, s: StageRecord) -> None:
        self.add_row(run, s.stage, s.loaded_by, f"{s.load_seconds:.2f}", f"{s.seconds:.2f}",
                     str(s.prompt_tokens), str(s.completion_tokens), f"{s.tokens_per_second:.1f}",
                     f"{s.peak_rss_mb:.0f}")
        self.move_cursor(row=self.row_count - 1)
