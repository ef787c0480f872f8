"""Each widget alone in a small host App, driven with Pilot (no model needed)."""

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Input

from tmd_local.runtime.bundle import zero_shot_bundle
from tmd_local.core.errors import TmdError
from tmd_local.runtime.pipeline import StageRecord, Trace
from tmd_local.runtime.pool import Residency
from tmd_local.core.records import Question
from tmd_local.tui.session import RunRecord
from tmd_local.tui.widgets import (AnswerView, HistoryList, MemoryGauge, QuestionForm, RunSettings,
                                   StageTable, StreamPanel, TraceColumn)

pytestmark = pytest.mark.asyncio
QUESTION = Question("q1", "There is most likely going to be fog around:",
                    {"A": "a marsh", "B": "a tundra", "C": "the plains"}, "A")


class Host(App):
    def __init__(self, widget):
        super().__init__()
        self.widget = widget
        self.messages = []

    def compose(self) -> ComposeResult:
        yield self.widget

    def on_run_settings_source_chosen(self, message):
        self.messages.append(message)

    def on_history_list_picked(self, message):
        self.messages.append(message)


async def test_stream_panel_appends_and_clears():
    panel = StreamPanel("Reasoning", "waiting")
    async with Host(panel).run_test() as pilot:
        assert "waiting" in str(panel.render()) and panel.body == ""
        for piece in ("1. Fog ", "forms ", "over water."):
            panel.append(piece)
        await pilot.pause()
        assert panel.body == "1. Fog forms over water." and panel.has_class("-active")
        panel.clear()
        assert panel.body == "" and not panel.has_class("-active")


async def test_answer_view_highlights_the_choice_and_the_gold():
    view = AnswerView()
    async with Host(view).run_test():
        view.show(QUESTION, "B")
        text = view.render().plain
        assert "▶ B. a tundra" in text and "A. a marsh  (gold)" in text and text.endswith("wrong")
        view.show(QUESTION, None)
        assert "no answer could be parsed" in view.render().plain


async def test_memory_gauge_against_a_budget():
    gauge = MemoryGauge(budget_mb=600, interval=0)
    async with Host(gauge).run_test():
        gauge.set_resident(["smollm2/analyzer"])
        gauge.refresh_now(rss=300.0)
        text = gauge.render().plain
        assert "300/600 MiB" in text and "budget 600 MiB" in text and "resident: smollm2/analyzer" in text
        assert text.count("█") == 12  # half of the 24-cell bar


async def test_stage_table_adds_rows():
    table = StageTable()
    async with Host(table).run_test():
        table.add_record("A", StageRecord("analyzer", "m", "q4_1", calls=1, prompt_tokens=90,
                                          completion_tokens=20, seconds=2.0, load_seconds=0.3))
        assert table.row_count == 1
        assert table.get_row_at(0)[:3] == ["A", "analyzer", "load"] and table.get_row_at(0)[7] == "10.0"


async def test_question_form_round_trip_and_errors():
    form = QuestionForm()
    async with Host(form).run_test() as pilot:
        with pytest.raises(TmdError, match="type a question first"):
            form.question()
        form.fill(QUESTION)
        assert form.question() == QUESTION  # id and gold kept while the text is unchanged
        form.query_one("#question", Input).value = "Where is fog likely?"
        edited = form.question()
        assert edited.answer is None and edited.options == QUESTION.options
        await pilot.click("#question")
        await pilot.press("end", "!")
        assert form.query_one("#question", Input).value == "Where is fog likely?!"


async def test_run_settings_lists_quants_and_reports_a_new_source():
    settings = RunSettings(["models/x"], system="drd")
    async with Host(settings).run_test() as pilot:
        settings.set_bundle(zero_shot_bundle("smollm2-135m-instruct"))
        assert settings.quant == "q4_1" and settings.system == "drd" and settings.compare_text == ""
        settings.system = "tmd"
        assert settings.system == "tmd"
        await pilot.click("#source")
        await pilot.press(*"models/b", "enter")
        await pilot.pause()
        assert [m.text for m in pilot.app.messages] == ["models/b"]


async def test_history_list_picks_a_record():
    history = HistoryList()
    record = RunRecord(QUESTION, "drd", ["m (q4_1)"], status="done")
    async with Host(history).run_test() as pilot:
        history.add(record)
        await pilot.pause()
        history.focus()
        history.index = 0
        await pilot.press("enter")
        await pilot.pause()
        assert [m.record for m in pilot.app.messages] == [record]


async def test_trace_column_follows_pipeline_events():
    column = TraceColumn("A")
    trace = Trace(QUESTION, "tmd")
    async with Host(column).run_test() as pilot:
        column.start("A · m (q4_1) · TMD", "tmd")
        column.stage_started("analyzer", "m")
        column.module_ready("analyzer", Residency("analyzer", "m", "q4_1", 0.25, estimated_mb=210))
        for piece in ("1. What is fog?", "\n2. Where is it wet?"):
            column.text("analyzer", piece)
        trace.subquestions = ["What is fog?", "Where is it wet?"]
        column.step_done("analyzer", trace)
        for call, knowledge in enumerate(["Fog is a low cloud.", "Marshes are wet."]):
            column.generation_started("informant", call)
            column.text("informant", knowledge)
        trace.knowledge = ["Fog is a low cloud.", "Marshes are wet."]
        column.step_done("informant", trace)
        column.text("reasoner", "1. Marshes are wet.\nFinal Answer: A")
        trace.reasoning, trace.answer = "1. Marshes are wet.\nFinal Answer: A", "A"
        trace.stated_answer, trace.answer_source = "A", "stated"
        trace.option_probs = {"A": 0.7, "B": 0.1, "C": 0.1}
        column.step_done("reasoner", trace)
        column.stage_finished("reasoner", Residency("reasoner", "m", "q4_1", peak_rss_mb=220,
                                                    rss_after_close_mb=60))
        await pilot.pause()
        assert column.panel("subquestions").body == "1. What is fog?\n2. Where is it wet?"
        knowledge = column.panel("knowledge").body
        assert "1. What is fog?\n   Fog is a low cloud." in knowledge and "Marshes are wet." in knowledge
        answer_text = column.answer_view.render().plain
        assert column.answer_view.answer == "A" and "correct" in answer_text
        assert "███████     70.0% ▶ A." in answer_text and "█           10.0%   B." in answer_text  # bar per option
        assert "stated in the reasoning" in answer_text
        assert "closed, RSS 220 -> 60 MiB" in str(column.query_one(".module-line").render())
        column.start("A · m · DRD", "drd")
        await pilot.pause()
        assert not column.panel("subquestions").display and column.panel("reasoning").body == ""
