"""The whole app with Pilot on the scripted fake module: what the user types becomes the exact
prompts, every panel fills from the pipeline's events, two targets run side by side, a stop and a
failing module end the run cleanly. test_app_real.py does the same on the real embedded model."""

import pytest
from textual.widgets import Button, Input, Static

from tmd_local.core import prompts
from tmd_local.runtime.bundle import open_source
from tmd_local.core.errors import TmdError
from tmd_local.runtime.fake import FakeLoader
from tmd_local.core.records import Question
from tmd_local.tui.app import TmdApp
from tmd_local.tui.widgets import HistoryList, StageTable, TraceColumn
from tui_helpers import export_trace, wait_for

pytestmark = pytest.mark.asyncio
PLANTS = Question("form", "Which of these do plants need to make their own food?",
                  {"A": "moonlight", "B": "sunlight", "C": "sand", "D": "salt water"})
SUBQUESTIONS = ["What do plants turn into food?", "What powers that?"]


def reply(prompt) -> str:
    """Answers each role by what its prompt asks (every role shares the embedded file here)."""
    if "break down a given complex question" in prompt.text:
        return "\n".join(f"{i}. {sq}" for i, sq in enumerate(SUBQUESTIONS, start=1))
    if "Write Relevant Knowledge" in prompt.text:
        return "Water and carbon dioxide." if "turn into" in prompt.text else "Sunlight."
    return "1. Photosynthesis runs on sunlight.\nFinal Answer: B"


def favour_b(reasoning, letters):
    return {letter: 0.7 if letter == "B" else 0.1 for letter in letters}


async def ask(pilot, question: Question) -> None:
    screen = pilot.app.main
    screen.query_one("#question", Input).value = question.question
    screen.query_one("#options").text = "\n".join(question.options.values())
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: screen.running is None and screen.last is not None, timeout=30)
    await pilot.pause()


def notices(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_the_typed_question_becomes_the_prompts_and_every_panel_fills(tmp_path, embedded_model):
    loader = FakeLoader(reply, option_probs=favour_b)
    app = TmdApp(open_source(), pool=loader.pool())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.main
        await ask(pilot, PLANTS)
        record = screen.last
        assert record.status == "done", record.message
        assert loader.prompts[0].messages == prompts.analyzer_messages(PLANTS)
        assert [p.messages for p in loader.prompts[1:3]] == [prompts.informant_messages(s) for s in SUBQUESTIONS]

        trace = record.traces[record.targets[0]]
        column = screen.query_one("#col-a", TraceColumn)
        assert column.panel("subquestions").body == "1. What do plants turn into food?\n2. What powers that?"
        assert column.panel("knowledge").body == ("1. What do plants turn into food?\n"
                                                  "   Water and carbon dioxide.\n"
                                                  "2. What powers that?\n   Sunlight.")
        assert column.panel("reasoning").body == trace.reasoning
        assert trace.reasoning == "1. Photosynthesis runs on sunlight.\nFinal Answer: B"
        assert column.answer_view.answer == "B" and "▶ B. sunlight" in column.answer_view.render().plain
        assert screen.query_one(StageTable).row_count == 3
        assert screen.query_one("#status", Static).render().plain == "done · A: B. sunlight"
        assert "A: B. sunlight" in notices(app)
        assert len(screen.query_one(HistoryList).records) == 1 and loader.open_modules == []

        exported = await export_trace(pilot, app, tmp_path / "trace.json")
        assert exported["runs"][0]["trace"]["knowledge"] == ["Water and carbon dioxide.", "Sunlight."]


async def test_two_targets_run_side_by_side_and_the_answers_are_compared(tmp_path, embedded_model):
    copy = tmp_path / "copy-of-smollm2.gguf"
    copy.symlink_to(embedded_model.path)
    loader = FakeLoader(["Final Answer: A", "Final Answer: B"],
                        option_probs=[{"A": 0.8, "B": 0.2}, {"A": 0.3, "B": 0.7}])
    app = TmdApp(open_source(), system="drd", pool=loader.pool())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.main
        screen.query_one("#compare", Input).value = str(copy)
        await ask(pilot, Question("q", "Could a penguin survive a day in the Sahara?", {"A": "yes", "B": "no"}))
        record = screen.last
        assert record.status == "done" and loader.loads == ["smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1"]
        a, b = (screen.query_one(f"#col-{c}", TraceColumn) for c in "ab")
        assert b.display and not a.panel("subquestions").display  # DRD has no subquestion panels
        assert (a.answer_view.answer, b.answer_view.answer) == ("A", "B")
        assert screen.query_one("#status", Static).render().plain.endswith("; answers differ")
        assert screen.query_one(StageTable).row_count == 2


async def test_a_stop_during_generation_ends_the_run_and_closes_the_module(embedded_model):
    app = TmdApp(open_source(), system="drd")

    def stop_then_talk(prompt) -> str:
        app.main.cancel.set()  # the user presses stop while the first tokens are coming
        return "one two three four five six seven"

    loader = FakeLoader(stop_then_talk)
    app.pool = loader.pool()
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.main
        await ask(pilot, Question("q", "Count to seven.", {"A": "yes", "B": "no"}))
        assert screen.last.status == "stopped" and not screen.last.traces
        assert screen.query_one("#col-a", TraceColumn).panel("reasoning").body == "one"
        assert "run stopped" in notices(app) and "(stopped)" in screen.query_one(HistoryList).records[0].summary()
        assert screen.query_one("#run", Button).disabled is False
        assert app.pool.resident == [] and loader.open_modules == []


async def test_a_failing_module_is_a_notification_and_the_next_run_works(embedded_model):
    def fail_once(prompt):
        raise TmdError("fake.gguf: llama.cpp could not load it (boom)")

    loader = FakeLoader([fail_once, "Final Answer: B"], option_probs=favour_b)
    app = TmdApp(open_source(), system="drd", pool=loader.pool())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.main
        question = Question("q", "Is ice cold?", {"A": "no", "B": "yes"})
        await ask(pilot, question)
        assert screen.last.status == "failed" and "(boom)" in screen.last.message
        assert any("(boom)" in n for n in notices(app)) and loader.open_modules == []
        await ask(pilot, question)
        assert screen.last.status == "done" and screen.last.traces[screen.last.targets[0]].answer == "B"


async def test_four_options_go_to_the_shipped_students_unless_a_source_is_chosen(embedded_model):
    from tmd_local.runtime.bundle import load_bundle
    from tmd_local.runtime.shipped import shipped_bundle

    loader = FakeLoader(reply, option_probs=favour_b)
    app = TmdApp(open_source(), shipped=load_bundle(shipped_bundle()), pool=loader.pool())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.main
        assert "four options: openbook-135m" in app.sub_title
        await ask(pilot, PLANTS)  # four options: the distilled students, LoRA over the embedded base
        record = screen.last
        assert record.status == "done", record.message
        assert record.targets == ["openbook-135m (q4_1)"]
        assert {p.model for p in loader.prompts} == {"openbook-135m/analyzer", "openbook-135m/informant",
                                                     "openbook-135m/reasoner"}
        assert loader.prompts[0].adapter == "analyzer.lora.gguf"
        assert "openbook-135m (q4_1)" in screen.query_one("#col-a", TraceColumn)._title

        loader.prompts.clear()
        await ask(pilot, Question("q", "Could a penguin survive a day in the Sahara?", {"A": "yes", "B": "no"}))
        assert screen.last.targets == ["smollm2-135m-instruct (q4_1)"]
        assert {p.model for p in loader.prompts} == {"smollm2-135m-instruct"}

        # The user loads a source: an explicit choice, which answers four-option questions too.
        screen.query_one("#source", Input).value = "smollm2-135m-instruct"
        screen.query_one("#source", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.shipped is None, timeout=10)
        loader.prompts.clear()
        await ask(pilot, PLANTS)
        assert screen.last.targets == ["smollm2-135m-instruct (q4_1)"]
        assert {p.model for p in loader.prompts} == {"smollm2-135m-instruct"}


async def test_zero_shot_app_has_no_shipped_students(embedded_model):
    from tmd_local.runtime.shipped import shipped_students

    assert shipped_students(None, None, zero_shot=True) is None
    assert shipped_students(None, "models/some-bundle", zero_shot=False) is None
    assert shipped_students(None, None, zero_shot=False).name == "openbook-135m"
    loader = FakeLoader(reply, option_probs=favour_b)
    app = TmdApp(open_source(), pool=loader.pool())  # what `tmd app --zero-shot` builds
    async with app.run_test(size=(160, 48)) as pilot:
        await ask(pilot, PLANTS)
        assert app.main.last.targets == ["smollm2-135m-instruct (q4_1)"]
        assert {p.model for p in loader.prompts} == {"smollm2-135m-instruct"}
