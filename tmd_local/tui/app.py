"""The Textual application: holds what to run (bundle, quant, system; the shipped distilled students
for four-option questions when it runs the embedded default model), the generation settings and the
module pool shared by every run of the session."""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from ..core.display import visible
from ..core.memory import MemoryBudget
from ..runtime.bundle import Bundle
from ..runtime.generation import GenerationSettings
from ..runtime.pool import ModulePool
from .screens import MainScreen


class TmdApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "tmd"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, bundle: Bundle, *, quant: str | None = None, system: str = "tmd",
                 settings: GenerationSettings | None = None, budget: MemoryBudget | None = None,
                 keep_loaded: bool = False, source_text: str = "", pool: ModulePool | None = None,
                 shipped: Bundle | None = None):
        super().__init__()
        self.bundle = bundle
        # The shipped students answer four-option questions in place of `bundle` until the user
        # chooses a source or quant (runtime/shipped.py); None: `bundle` answers everything.
        self.shipped = shipped
        self.quant = quant
        self.system = system
        self.settings = settings or GenerationSettings()
        # `pool` replaces the one built from settings/budget/keep_loaded (tests pass a fake-module pool)
        self.pool = pool or ModulePool(self.settings, budget=budget, keep_loaded=keep_loaded)
        self.source_text = source_text

    def on_mount(self) -> None:
        self.push_screen(MainScreen(self.source_text))

    def notify(self, message: str, *, title: str = "", severity="information", timeout: float | None = None,
               markup: bool = False) -> None:
        """Every notification quotes what a user, a file or a model wrote (errors name paths, options
        and ids): it is shown as written, never read as markup or obeyed as control codes."""
        super().notify(visible(message), title=visible(title, one_line=True), severity=severity,
                       timeout=timeout, markup=False)

    @property
    def main(self) -> MainScreen:
        return next(s for s in self.screen_stack if isinstance(s, MainScreen))

    def on_unmount(self) -> None:
        # A run still in its worker closes its own module when it stops; only close what is idle.
        main = next((s for s in self.screen_stack if isinstance(s, MainScreen)), None)
        if main is None or main.running is None:
            self.pool.close_all()
