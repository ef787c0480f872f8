"""Categories 1 and 8: text from users, files and models is shown, never read as Rich markup or
obeyed as terminal control codes; empty questions and option keys no answer can match are refused."""

from __future__ import annotations

import io

from hypothesis import given, strategies as st
from rich.console import Console

from hostile_helpers import MISSING_MODEL, invoke, one_line_error
from tmd_local.core.display import markup_safe, visible
from tmd_local.runtime.pipeline import StageRecord, Trace
from tmd_local.core.records import Question
from tmd_local.runtime.render import summary_table, trace_view

MARKUP = st.sampled_from(["[/x]", "[red]B", "[/]", "[bold", "\\[x]", "x\\", "[link=x]y[/link]", "[@click]",
                          "\x1b[31mred", "\x1b]0;title\x07", "\x1b[2J", "\r\x08\x7f", "\ud800", "\u2028"])
HOSTILE = st.lists(st.one_of(MARKUP, st.text(max_size=12)), min_size=1, max_size=4).map("".join)


def test_the_examples_from_the_issue():
    error = one_line_error(invoke("ask", "Is the sun a star?", "--option", "A=yes", "--option", "[/x]"))
    assert "[/x]" in error
    error = one_line_error(invoke("ask", "Is the sun a star?", "--option", "A=yes", "--option", "[red]B"))
    assert "[red]B" in error  # the text is kept, not swallowed as a style


@given(HOSTILE)
def test_option_text_in_errors_is_shown_as_written(text):
    result = invoke("ask", "Q?", "--option", "A=yes", "--option", text, "--model", MISSING_MODEL)
    line = one_line_error(result)
    shown = visible(text, one_line=True).strip()
    if "\\" not in shown and "'" not in shown:  # repr() in messages doubles backslashes
        assert shown in line or "LETTER=TEXT" in line or "no such file" in line


@given(HOSTILE, HOSTILE)
def test_options_and_model_path_with_markup_never_crash(option, path):
    result = invoke("ask", "Q?", "--option", f"A={option}", "--option", "B=no", "--model", f"/nonexistent/{path}")
    one_line_error(result)


@given(st.sampled_from(["", " ", "\t\n", "\u3000", "  \n  "]))
def test_empty_or_blank_question_is_refused(question):
    one_line_error(invoke("ask", question, "--option", "A=yes", "--option", "B=no"), "QUESTION")


@given(st.characters(blacklist_categories=("Cs",)).filter(lambda c: c.upper() not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
def test_option_keys_other_than_a_to_z_are_refused(letter):
    result = invoke("ask", "Q?", "--option", f"{letter}=yes", "--option", "B=no")
    one_line_error(result, "letter A-Z")


def test_greek_keys_from_the_issue():
    one_line_error(invoke("ask", "Q?", "--option", "α=yes", "--option", "β=no"), "letter A-Z")


def test_text_that_is_not_utf8_is_refused():
    # A non-UTF-8 byte in argv reaches Python as a lone surrogate.
    one_line_error(invoke("ask", "Is \udcff a star?", "--option", "A=yes", "--option", "B=no"), "UTF-8")
    one_line_error(invoke("ask", "Q?", "--option", "A=y\udcfe", "--option", "B=no"), "UTF-8")


def _render(renderable) -> str:
    out = io.StringIO()
    Console(file=out, width=100, force_terminal=True, color_system=None).print(renderable)
    return out.getvalue()


@given(HOSTILE, HOSTILE, HOSTILE, st.lists(HOSTILE, max_size=3))
def test_traces_with_hostile_text_render_harmlessly(question, option, reasoning, subquestions):
    q = Question(markup_safe(question)[:20] or "id", question or "?", {"A": option or "x", "B": "[/b]"}, "A")
    trace = Trace(q, "tmd", subquestions=subquestions, knowledge=list(subquestions), reasoning=reasoning,
                  answer="A", warnings=[option])
    trace.stages["reasoner"] = StageRecord("reasoner", option, "[/q]")
    text = _render(trace_view(trace))
    assert "\x1b[" not in visible(question) and "\x07" not in text


@given(HOSTILE)
def test_summary_table_labels_are_shown_as_written(teacher):
    summary = {"config": {"system": "tmd", "dataset": "obqa", "split": "test", "teacher": teacher,
                          "models": {"reasoner": {"file": f"{teacher}.gguf", "file_type": "q8_0"}},
                          "settings": {"seed": 0}},
               "n": 0, "correct": 0, "accuracy": 0.0, "ci95": [0.0, 0.0], "stated_accuracy": 0.0,
               "stated_share": 0.0, "unparsed": 0, "unscored": 2, "seconds_per_question": 0.0, "peak_rss_mb": 0.0}
    text = _render(summary_table([summary]))
    assert "not scored" in text


def test_ansi_escapes_in_a_question_reach_the_terminal_as_text():
    q = Question("q\x1b[2J", "Clear \x1b[2Jthe screen?", {"A": "\x1b[31myes", "B": "no"})
    text = _render(trace_view(Trace(q, "drd", reasoning="ok \x1b]0;pwned\x07", answer="A")))
    assert "\\x1b[2J" in text and "\\x1b[31m" in text and "\\x07" in text
