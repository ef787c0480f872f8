"""The terminal every command writes to: stdout and stderr consoles, warnings, and the one-line
error wrapper (TmdError -> `Error: <message>` on stderr, exit status 1).

Shared by the commands of every stage (tmd_local.cli, teacher/, trainer/, exporter/, the app and the
server), so it imports only rich and tmd_local's bottom modules: a stage's command module imports it
without importing the `tmd` command group that imports the stage.
"""

from __future__ import annotations

import functools
import sys

from rich.console import Console

from .display import visible
from .errors import TmdError

console = Console()
err_console = Console(stderr=True)


def one_line_errors(func):
    """A command whose TmdError is one line on stderr and exit status 1; Ctrl-C says how to resume."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TmdError as e:
            print_error(str(e))
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("Interrupted; finished work is saved, rerun the same command to resume.")
            sys.exit(130)
    return wrapper


def print_error(message: str) -> None:
    """`Error: <message>` as one line: the message is shown, never read as markup or obeyed as
    terminal control codes (it quotes user input and file contents)."""
    from rich.text import Text

    err_console.print(Text.assemble(("Error:", "red"), " ", visible(message, one_line=True)),
                      highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A warning line on stderr, shown as written (see print_error)."""
    from rich.text import Text

    err_console.print(Text(visible(message, one_line=True), style="yellow"), highlight=False, soft_wrap=True)


def warn_plain(message: str) -> None:
    """A note on stderr, uncoloured, shown as written (it may span lines)."""
    err_console.print(visible(message), markup=False, highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """A plain line on stdout that quotes paths or names: never read as markup."""
    console.print(visible(message), markup=False, highlight=False, soft_wrap=True)
