"""One run of the pipeline as it happens: the module in memory, the Analyzer's subquestions, the
Informant's knowledge per subquestion, the reasoning, and the answer among the options."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ...core.display import markup_safe, visible
from ...runtime.pipeline import Trace
from ...runtime.pool import Residency
from ...runtime.render import answer_provenance
from .answer import AnswerView
from .stream_panel import StreamPanel


class TraceColumn(VerticalScroll):
    DEFAULT_CSS = """
    TraceColumn { width: 1fr; height: 1fr; padding: 0 1 0 0; }
    TraceColumn .module-line { height: auto; color: $text-muted; }
    TraceColumn .title { text-style: bold; height: auto; }
    """

    def __init__(self, title: str = "", **kwargs):
        super().__init__(**kwargs)
        self._title = title
        self.system = "tmd"
        self.subquestions: list[str] = []
        self.knowledge: list[str] = []
        self._current_call = 0

    def compose(self) -> ComposeResult:
        yield Static(self._title, classes="title")
        yield Static("no module loaded", classes="module-line")
        yield StreamPanel("Subquestions · Analyzer", "the Analyzer breaks the question down here",
                          classes="subquestions")
        yield StreamPanel("Knowledge · Informant", "one piece of knowledge per subquestion",
                          classes="knowledge")
        yield StreamPanel("Reasoning · Reasoner", "numbered reasoning and the final answer",
                          classes="reasoning")
        yield AnswerView()

    # --- helpers for tests and the screen
    def panel(self, name: str) -> StreamPanel:
        return self.query_one(f".{name}", StreamPanel)

    @property
    def answer_view(self) -> AnswerView:
        return self.query_one(AnswerView)

    def set_title(self, title: str) -> None:
        self._title = title
        self.query_one(".title", Static).update(Text(visible(title, one_line=True), style="bold"))

    def set_module_line(self, text: str) -> None:
        self.query_one(".module-line", Static).update(text)

    # --- a new run
    def start(self, title: str, system: str) -> None:
        self.set_title(title)
        self.system = system
        self.subquestions, self.knowledge, self._current_call = [], [], 0
        drd = system == "drd"
        self.panel("subquestions").display = not drd
        self.panel("knowledge").display = not drd
        self.panel("subquestions").clear()
        self.panel("knowledge").clear()
        self.panel("reasoning").border_title = "Reasoning · DRD" if drd else "Reasoning · Reasoner"
        self.panel("reasoning").clear()
        self.answer_view.clear()
        self.set_module_line("starting...")

    # --- pipeline events (called on the UI thread)
    def stage_started(self, stage: str, model_label: str) -> None:
        self.set_module_line(f"[b]{stage}[/b]: loading {markup_safe(model_label, True)}...")

    def module_ready(self, stage: str, r: Residency) -> None:
        how = {"load": f"loaded in {r.load_seconds:.2f}s", "reuse": "already resident",
               "swap": f"adapter swapped in {r.load_seconds * 1000:.1f} ms"}[r.how]
        est = f", est. {r.estimated_mb:.0f} MiB" if r.estimated_mb else ""
        self.set_module_line(f"[b]{stage}[/b] resident: {markup_safe(r.model, True)} "
                             f"({markup_safe(r.file_type, True)}) {how}{est}")

    def stage_finished(self, stage: str, r: Residency) -> None:
        if r.kept_loaded:
            self.set_module_line(f"{stage} done; {markup_safe(r.model, True)} kept loaded")
        else:
            self.set_module_line(f"{stage} done; {markup_safe(r.model, True)} closed, RSS {r.peak_rss_mb:.0f} -> "
                                 f"{r.rss_after_close_mb:.0f} MiB")

    def generation_started(self, stage: str, call: int) -> None:
        if stage == "informant":
            self._current_call = call
            while len(self.knowledge) <= call:
                self.knowledge.append("")
            self._render_knowledge(active=True)

    def text(self, stage: str, piece: str) -> None:
        if stage == "analyzer":
            self.panel("subquestions").append(piece)
        elif stage == "informant":
            self.knowledge[self._current_call] += piece
            self._render_knowledge(active=True)
        else:
            self.panel("reasoning").append(piece)

    def step_done(self, stage: str, trace: Trace) -> None:
        if stage == "analyzer":
            self.subquestions = list(trace.subquestions)
            self.panel("subquestions").show(_numbered(trace.subquestions))
            self.knowledge = []
            self._render_knowledge(active=False)
        elif stage == "informant":
            self.knowledge = list(trace.knowledge)
            self._render_knowledge(active=False)
        else:
            self.panel("reasoning").show(trace.reasoning or "(no output)")
            self.answer_view.show(trace.question, trace.answer, trace.option_probs,
                                  answer_provenance(trace) if trace.option_probs else "")

    def _render_knowledge(self, active: bool) -> None:
        if not self.subquestions:
            self.panel("knowledge").show(Text("No decomposition: nothing to look up", style="dim"))
            return
        text = Text()
        for i, sq in enumerate(self.subquestions):
            text.append(visible(f"{i + 1}. {sq}") + "\n", style="bold")
            knowledge = self.knowledge[i] if i < len(self.knowledge) else ""
            text.append(visible(f"   {knowledge.strip()}") + "\n" if knowledge else "   ...\n",
                        style="" if knowledge else "dim")
        text.rstrip()  # in place
        self.panel("knowledge").show(text, active=active)

    # --- a finished trace (history, or a run that was restored)
    def show_trace(self, title: str, trace: Trace) -> None:
        self.start(title, trace.system)
        if trace.system == "tmd":
            self.step_done("analyzer", trace)
            self.step_done("informant", trace)
        self.step_done("reasoner", trace)
        self.set_module_line("from history")


def _numbered(items: list[str]) -> Text:
    if not items:
        return Text("No decomposition", style="italic")
    return Text(visible("\n".join(f"{i}. {s}" for i, s in enumerate(items, start=1))))
