"""The main screen: settings, question and history on the left; the pipeline's columns, per-stage
figures and the memory gauge on the right. The pipeline runs in a thread worker; everything it
reports reaches the widgets through call_from_thread."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Static
from textual.worker import get_current_worker

from ...core.display import visible
from ...core.errors import TmdError
from ...core.registry import EMBEDDED
from ...runtime.bundle import find_bundles, open_source
from ...runtime.generation import Cancelled
from ...runtime.pipeline import Events, Trace, run
from ...runtime.pool import Residency
from ...runtime.shipped import pick
from ..session import RunRecord, Target, compare_target, default_export_path, export_run
from ..widgets import (
    HistoryList,
    MemoryGauge,
    QuestionForm,
    RunSettings,
    StageTable,
    TraceColumn,
)
from .dataset import DatasetScreen
from .export import ExportScreen
from .help import HelpScreen


def notify_errors(handler):
    """Library errors become a notification; nothing raised in a handler may reach the screen."""
    @functools.wraps(handler)
    def wrapper(self, *args, **kwargs):
        try:
            return handler(self, *args, **kwargs)
        except TmdError as e:
            self.notify(str(e), severity="error", timeout=8)
        except Exception as e:  # a bug: still one line, never a traceback over the UI
            self.notify(f"{type(e).__name__}: {e}", title="unexpected error", severity="error", timeout=10)
    return wrapper


class MainScreen(Screen):
    BINDINGS = [
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+t", "toggle_system", "TMD/DRD", priority=True),
        Binding("ctrl+o", "dataset", "Dataset", priority=True),
        Binding("ctrl+s", "export", "Export", priority=True),
        Binding("f1", "help", "Help"),
    ]

    def __init__(self, source_text: str = ""):
        super().__init__()
        self.source_text = source_text
        self.cancel = threading.Event()
        self.running: RunRecord | None = None
        self.last: RunRecord | None = None

    def compose(self) -> ComposeResult:
        app = self.app
        suggestions = [str(p) for p in find_bundles()] + list(EMBEDDED)
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield RunSettings(suggestions, system=app.system, id="settings")
                yield QuestionForm(id="form")
                with Horizontal(id="buttons"):
                    yield Button("Run", id="run", variant="primary")
                    yield Button("Stop", id="stop", variant="error", disabled=True)
                    yield Button("Dataset", id="dataset")
                yield HistoryList(id="history")
            with Vertical(id="main"):
                with Horizontal(id="columns"):
                    yield TraceColumn("", id="col-a")
                    yield TraceColumn("", id="col-b")
                with Horizontal(id="status-area"):
                    yield StageTable(id="stages")
                    with Vertical(id="status-side"):
                        yield Static("ready", id="status")
                        yield MemoryGauge(app.pool.budget.limit_mb, id="gauge")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(RunSettings).set_bundle(self.app.bundle, self.app.quant, self.source_text)
        self.query_one("#col-b", TraceColumn).display = False
        self.query_one("#col-a", TraceColumn).set_title(f"{self.app.bundle.name}: ask a question")
        self._update_subtitle()
        self.query_one("#question", Input).focus()

    def _update_subtitle(self) -> None:
        pool = self.app.pool
        budget = f"budget {pool.budget.text}" if pool.budget.limit_bytes else "no memory budget"
        residency = "keep loaded" if pool.keep_loaded else "one module at a time"
        four = f" (four options: {self.app.shipped.name})" if self.app.shipped is not None else ""
        self.app.sub_title = f"{self.app.bundle.name}{four} · {residency} · {budget}"

    # --- settings
    @on(RunSettings.SourceChosen)
    @notify_errors
    def load_source(self, event: RunSettings.SourceChosen) -> None:
        if not event.text:
            return
        bundle = open_source(model=event.text)
        self.app.bundle = bundle
        self.app.shipped = None  # the user chose what runs: it answers every question
        self.query_one(RunSettings).set_bundle(bundle)
        self._update_subtitle()
        self.notify(f"{bundle.describe()}", title="loaded")

    def action_toggle_system(self) -> None:
        settings = self.query_one(RunSettings)
        settings.system = "drd" if settings.system == "tmd" else "tmd"
        self.notify(f"system: {settings.system.upper()}")

    # --- running
    @on(Button.Pressed, "#run")
    def _run_button(self) -> None:
        self.action_run()

    @on(Button.Pressed, "#stop")
    def _stop_button(self) -> None:
        self.action_stop()

    @on(Button.Pressed, "#dataset")
    def _dataset_button(self) -> None:
        self.action_dataset()

    @on(Input.Submitted, "#question")
    def _question_submitted(self) -> None:
        self.action_run()

    @notify_errors
    def action_run(self) -> None:
        if self.running is not None:
            self.notify("a run is in progress; press Escape to stop it", severity="warning")
            return
        settings = self.query_one(RunSettings)
        question = self.query_one(QuestionForm).question()
        targets = [self._first_target(settings, question)]
        other = compare_target(settings.compare_text, self.app.bundle)
        if other is not None:
            targets.append(other)
        for target in targets:
            target.modules()  # a missing or truncated file is reported now, before anything runs
        record = RunRecord(question, settings.system, [t.label for t in targets])
        columns = [self.query_one("#col-a", TraceColumn), self.query_one("#col-b", TraceColumn)]
        columns[1].display = len(targets) > 1
        for run_name, target, column in zip("AB", targets, columns):
            column.start(f"{run_name} · {target.label} · {record.system.upper()}", record.system)
        self.query_one(HistoryList).add(record)
        self.running = self.last = record
        self.cancel.clear()
        self._set_running(True)
        self.run_pipeline(record, targets, columns[:len(targets)])

    def _first_target(self, settings: RunSettings, question) -> Target:
        """The loaded source in the chosen quant; the shipped students instead for a question they
        suit while the user has chosen neither another source nor another quant."""
        chosen = Target(self.app.bundle, settings.quant)
        shipped = self.app.shipped
        if shipped is None or settings.quant != self.app.bundle.default_quant:
            return chosen
        return pick(settings.system, question.options, chosen, Target(shipped, shipped.default_quant))

    def action_stop(self) -> None:
        if self.running is not None:
            self.cancel.set()
            self.query_one("#status", Static).update("stopping after the current token...")

    def _set_running(self, running: bool) -> None:
        self.query_one("#run", Button).disabled = running
        self.query_one("#stop", Button).disabled = not running

    @work(thread=True, exclusive=True, group="pipeline", exit_on_error=False)
    def run_pipeline(self, record: RunRecord, targets: list[Target], columns: list[TraceColumn]) -> None:
        worker = get_current_worker()

        def should_stop() -> bool:
            return self.cancel.is_set() or worker.is_cancelled

        def ui(fn, *args) -> None:
            if worker.is_cancelled:
                return  # the app is closing: its loop may not answer any more
            try:
                self.app.call_from_thread(fn, *args)
            except RuntimeError:
                pass

        try:
            for run_name, target, column in zip("AB", targets, columns):
                events = _ColumnEvents(self, column, run_name, ui)
                trace = run(record.system, [record.question], target.modules(), events=events,
                            pool=self.app.pool, should_stop=should_stop)[0]
                record.traces[target.label] = trace
            record.status = "done"
        except Cancelled:
            record.status, record.message = "stopped", "stopped by the user"
        except TmdError as e:
            record.status, record.message = "failed", str(e)
        except Exception as e:  # a bug: reported in one line, the app stays up
            record.status, record.message = "failed", f"{type(e).__name__}: {e}"
        ui(self._run_finished, record)

    def _run_finished(self, record: RunRecord) -> None:
        self.running = None
        self._set_running(False)
        self.query_one(HistoryList).refresh_record(record)
        self.query_one(MemoryGauge).set_resident(self.app.pool.resident)
        if record.status == "done":
            answers = [f"{name}: {_answer_text(record, t)}" for name, t in zip("AB", record.targets)]
            same = len({record.traces[t].answer for t in record.targets}) == 1
            compare = ("; same answer" if same else "; answers differ") if len(answers) > 1 else ""
            self.set_status("done · " + " | ".join(answers) + compare)
            self.notify(" | ".join(answers) + compare, title="final answer")
        elif record.status == "stopped":
            self.query_one("#status", Static).update("stopped")
            self.notify("run stopped", severity="warning")
        else:
            self.query_one("#status", Static).update("failed")
            self.notify(record.message, severity="error", timeout=10)

    # --- events from the worker, on the UI thread
    def stage_finished(self, run: str, residency: Residency, trace: Trace | None) -> None:
        if trace is not None and residency.stage in trace.stages:
            self.query_one(StageTable).add_record(run, trace.stages[residency.stage])
        self.query_one(MemoryGauge).set_resident(self.app.pool.resident)

    def module_ready(self) -> None:
        self.query_one(MemoryGauge).set_resident(self.app.pool.resident)

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(Text(visible(text)))

    # --- history, dataset, export, help
    @on(HistoryList.Picked)
    def show_history(self, event: HistoryList.Picked) -> None:
        record = event.record
        if record is self.running:
            return
        columns = [self.query_one("#col-a", TraceColumn), self.query_one("#col-b", TraceColumn)]
        shown = [t for t in record.targets if t in record.traces]
        columns[1].display = len(shown) > 1
        for run_name, target, column in zip("AB", shown, columns):
            column.show_trace(f"{run_name} · {target} · {record.system.upper()}", record.traces[target])
        self.query_one(QuestionForm).fill(record.question)

    def action_dataset(self) -> None:
        def picked(question) -> None:
            if question is not None:
                self.query_one(QuestionForm).fill(question)
                self.notify(f"{question.id}: press ctrl+r to run it", title="question loaded")
        self.app.push_screen(DatasetScreen(), picked)

    def action_export(self) -> None:
        history = self.query_one(HistoryList)
        index = history.index
        record = history.records[index] if index is not None and index < len(history.records) else self.last
        if record is None or not record.traces:
            self.notify("nothing to export yet: run a question first", severity="warning")
            return
        self.app.push_screen(ExportScreen(str(default_export_path(record))),
                             lambda path: self._export(record, path))

    @notify_errors
    def _export(self, record: RunRecord, path: str | None) -> None:
        if path:
            written = export_run(record, Path(path))
            self.notify(str(written), title="exported")

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())


def _answer_text(record: RunRecord, target: str) -> str:
    answer = record.traces[target].answer
    return f"{answer}. {record.question.options[answer]}" if answer else "no answer parsed"


class _ColumnEvents(Events):
    """Pipeline progress -> one TraceColumn, the stage table and the status line (via `ui`)."""

    def __init__(self, screen: MainScreen, column: TraceColumn, label: str, ui):
        self.screen, self.column, self.label, self.ui = screen, column, label, ui
        self.trace: Trace | None = None
        self.tokens, self.started, self.stage = 0, 0.0, ""

    def stage_started(self, stage, model) -> None:
        self.ui(self.column.stage_started, stage, getattr(model, "label", model.name))
        self.ui(self.screen.set_status, f"{self.label}: loading the {stage}...")

    def module_ready(self, stage, residency) -> None:
        self.ui(self.column.module_ready, stage, residency)
        self.ui(self.screen.module_ready)

    def generation_started(self, stage, index, call) -> None:
        self.tokens, self.started, self.stage = 0, time.perf_counter(), stage
        self.ui(self.column.generation_started, stage, call)

    def text(self, stage, index, piece) -> None:
        self.tokens += 1
        self.ui(self.column.text, stage, piece)
        if self.tokens % 8 == 0:
            rate = self.tokens / max(time.perf_counter() - self.started, 1e-6)
            self.ui(self.screen.set_status, f"{self.label}: {stage} generating, {rate:.1f} tok/s")

    def step_done(self, stage, index, trace) -> None:
        self.trace = trace
        self.ui(self.column.step_done, stage, trace)

    def stage_finished(self, stage, residency) -> None:
        self.ui(self.column.stage_finished, stage, residency)
        self.ui(self.screen.stage_finished, self.label, residency, self.trace)
