"""Resident memory against the budget, refreshed on a timer (reading /proc costs microseconds)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ...core.memory import peak_rss_mb, rss_mb

BAR = 24


class MemoryGauge(Static):
    DEFAULT_CSS = """
    MemoryGauge { height: auto; padding: 0 1; }
    """

    def __init__(self, budget_mb: float | None = None, interval: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.budget_mb = budget_mb
        self.interval = interval
        self.resident: list[str] = []
        self.peak_mb = 0.0

    def on_mount(self) -> None:
        self.refresh_now()
        if self.interval:
            self.set_interval(self.interval, self.refresh_now)

    def set_resident(self, names: list[str]) -> None:
        self.resident = list(names)
        self.refresh_now()

    def refresh_now(self, rss: float | None = None) -> None:
        rss = rss_mb() if rss is None else rss
        self.peak_mb = max(self.peak_mb, rss, peak_rss_mb() if rss is None else 0.0)
        self.update(self.render_gauge(rss))

    def render_gauge(self, rss: float) -> Text:
        scale = self.budget_mb or max(self.peak_mb, rss, 1.0)
        filled = min(BAR, round(BAR * rss / scale))
        ratio = rss / scale
        colour = ("cyan" if not self.budget_mb else
                  "green" if ratio < 0.75 else "yellow" if ratio < 0.95 else "red")
        text = Text("memory ")
        text.append("█" * filled, style=colour)
        text.append("░" * (BAR - filled), style="dim")
        if self.budget_mb:
            text.append(f" {rss:.0f}/{self.budget_mb:.0f} MiB")
        else:
            text.append(f" {rss:.0f} MiB")
        text.append(f"\npeak {self.peak_mb:.0f} MiB · " + (f"budget {self.budget_mb:.0f} MiB" if self.budget_mb
                                                         else "no budget (--max-memory)"), style="dim")
        text.append("\nresident: " + (", ".join(self.resident) if self.resident else "no module"),
                    style="dim")
        return text
