"""The same checks in the app: hostile text, blank questions, per-module quants without a bundle and
bad export paths are notifications (shown as written), never a crash."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from tmd_local.runtime.bundle import open_source
from tmd_local.core.records import Question
from tmd_local.tui.app import TmdApp
from tmd_local.tui.session import RunRecord
from tmd_local.tui.widgets import HistoryList, RunSettings, TraceColumn

pytestmark = pytest.mark.asyncio

HOSTILE = ["[/x]", "[red]B", "\x1b[2Jclear", "[@click=app.quit]x[/]", "a\\", "[b"]


def _messages(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_hostile_text_is_notified_as_written(embedded_model):
    app = TmdApp(open_source())
    async with app.run_test(size=(150, 45)) as pilot:
        for text in HOSTILE:
            app.notify(text, title=text, severity="error")
        await pilot.pause()
        assert "[/x]" in _messages(app) and "\\x1b[2Jclear" in _messages(app)
        screen = app.main
        screen.load_source(RunSettings.SourceChosen("/nonexistent/[/x]\x1b[31m.gguf"))
        await pilot.pause()
        assert any("[/x]" in m and "\\x1b[31m" in m for m in _messages(app))


@pytest.mark.parametrize("question, options, fragment", [
    ("", "yes\nno", "type a question first"),
    ("   ", "yes\nno", "type a question first"),
    ("Q?", "only one", "at least two"),
    ("Q?", "\n".join(f"option {i}" for i in range(30)), "at most 26"),
    ("Q?", "A. yes\nA. no", "appears twice"),
])
async def test_bad_questions_are_notifications(embedded_model, question, options, fragment):
    app = TmdApp(open_source())
    async with app.run_test(size=(150, 45)) as pilot:
        screen = app.main
        screen.query_one("#question", Input).value = question
        screen.query_one("#options").text = options
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert screen.running is None and any(fragment in m for m in _messages(app))


async def test_per_module_quant_to_compare_without_a_bundle(embedded_model):
    app = TmdApp(open_source())
    async with app.run_test(size=(150, 45)) as pilot:
        screen = app.main
        screen.query_one("#question", Input).value = "Q?"
        screen.query_one("#options").text = "yes\nno"
        screen.query_one("#compare", Input).value = "f16,reasoner=q3"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert screen.running is None and any("need --bundle" in m for m in _messages(app))


async def test_hostile_history_titles_and_export_path(embedded_model, tmp_path):
    app = TmdApp(open_source())
    async with app.run_test(size=(150, 45)) as pilot:
        screen = app.main
        q = Question("[/x]", "[red]Is \x1b[2J it?", {"A": "[/b]", "B": "no"})
        record = RunRecord(q, "tmd", ["[/t]"], status="failed", message="[/m]")
        screen.query_one(HistoryList).add(record)
        screen.query_one("#col-a", TraceColumn).set_title("[/title] \x1b[31m")
        screen.set_status("done · [/x]")
        await pilot.pause()
        folder = tmp_path / "folder"
        folder.mkdir()
        screen._export(record, str(folder))
        await pilot.pause()
        assert any("is a folder" in m for m in _messages(app))
