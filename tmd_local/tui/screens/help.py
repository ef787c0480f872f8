"""Keys and what the screen shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# tmd app

Ask a multiple-choice question and watch the three modules work one after another:
the **Analyzer** breaks it into subquestions, the **Informant** writes knowledge for each,
the **Reasoner** reasons and picks an option. **DRD** is the single-module baseline.

Only one module is in memory at a time (unless started with `--keep-loaded`): the line under
each column title says which one is resident, and the gauge shows this process's memory
against `--max-memory`.

| key | action |
|---|---|
| `ctrl+r` | run the question (Enter in the question box too) |
| `escape` | stop the run between two tokens |
| `ctrl+t` | switch between TMD and DRD |
| `ctrl+o` | pick a question from a benchmark dataset |
| `ctrl+s` | export the selected run (history) or the last one to JSON or Markdown |
| `f1` | this help |
| `ctrl+q` | quit |

**Compare**: type a quantization of the current bundle (e.g. `q4_k_m`), another bundle folder,
a model name or a `.gguf` path in *Compare with*; the same question then runs on both, one after
the other, and the answers appear side by side.

**Bundles**: `models/<bundle>/manifest.json` written by `tmd export`; a plain model or GGUF is a
zero-shot bundle (every role is that model).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close help")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 95%; height: 80%; border: thick $accent;
                                  background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)

    def action_dismiss(self) -> None:
        self.dismiss(None)
