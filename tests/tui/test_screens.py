"""Screens without running a model: dataset picker, export dialog, help, system toggle."""

import pytest
from textual.app import App
from textual.widgets import Input, OptionList

from tmd_local.runtime.bundle import open_source
from tmd_local.tui.app import TmdApp
from tmd_local.tui.screens import DatasetScreen, ExportScreen, HelpScreen
from tmd_local.tui.widgets import QuestionForm, RunSettings
from tui_helpers import wait_for

pytestmark = pytest.mark.asyncio


class Host(App):
    def __init__(self, screen):
        super().__init__()
        self.dialog, self.result = screen, "unset"

    def on_mount(self) -> None:
        self.push_screen(self.dialog, self.done)

    def done(self, result) -> None:
        self.result = result


async def test_dataset_screen_returns_the_chosen_question(data_dir):
    screen = DatasetScreen("strategyqa", "test")
    async with Host(screen).run_test() as pilot:
        await wait_for(pilot, lambda: screen.questions)
        assert screen.query_one(OptionList).option_count == len(screen.questions) <= 500
        await pilot.press("down", "enter")
        await pilot.pause()
        assert pilot.app.result == screen.questions[1]


async def test_export_screen_returns_the_path_or_none():
    async with Host(ExportScreen("traces/run.md")).run_test() as pilot:
        assert pilot.app.dialog.query_one(Input).value == "traces/run.md"
        await pilot.press("enter")
        assert pilot.app.result == "traces/run.md"
    async with Host(ExportScreen("traces/run.md")).run_test() as pilot:
        await pilot.press("escape")
        assert pilot.app.result is None


async def test_main_screen_keys_without_running_a_model(data_dir):
    app = TmdApp(open_source())
    async with app.run_test(size=(150, 45)) as pilot:
        screen = app.main
        assert app.sub_title.startswith("smollm2-135m-instruct · one module at a time")
        await pilot.press("ctrl+t")
        assert screen.query_one(RunSettings).system == "drd"
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("ctrl+s")  # nothing to export yet: a warning, no dialog
        assert app.screen is screen and any("nothing to export" in n.message for n in app._notifications)
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, DatasetScreen)
        await wait_for(pilot, lambda: app.screen.questions)
        first = app.screen.questions[0]
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen
        assert screen.query_one(QuestionForm).question() == first  # gold answer travels along


async def test_a_budget_too_small_is_a_notification_not_a_crash():
    from tmd_local.core.memory import MemoryBudget

    app = TmdApp(open_source(), budget=MemoryBudget.parse("100MB"))
    async with app.run_test(size=(150, 45)) as pilot:
        screen = app.main
        assert "budget 100MB" in app.sub_title
        screen.query_one("#question", Input).value = "Is fog wet?"
        screen.query_one("#options").text = "yes\nno"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.running is None and screen.last is not None, timeout=60)
        await pilot.pause()
        assert screen.last.status == "failed" and "--max-memory 100MB" in screen.last.message
        assert any("needs about" in n.message for n in app._notifications)
        assert app.pool.resident == []


async def test_escape_stops_the_running_run():
    from textual.widgets import Static

    from tmd_local.core.records import Question
    from tmd_local.tui.session import RunRecord

    app = TmdApp(open_source())
    async with app.run_test(size=(150, 45)) as pilot:
        screen = app.main
        screen.running = RunRecord(Question("q", "Q?", {"A": "yes", "B": "no"}), "drd", ["m"])
        await pilot.click("#options")
        await pilot.press("escape")
        assert screen.cancel.is_set()
        assert "stopping" in screen.query_one("#status", Static).render().plain
