"""The terminal every command writes to: stdout and stderr consoles, warnings, and the one-line
error wrapper (TmdError -> `Error: <message>` on stderr, exit status 1).

Shared by the commands of every stage (tmd_local.cli, teacher/, trainer/, exporter/, the app and the
server), so it imports only rich and tmd_local's bottom modules: a stage's command module imports it
without importing the `tmd` command group that imports the stage.
"""

from __future__ import annotations

import errno
import functools
import sys

from rich.console import Console

from ..core.display import visible
from ..core.errors import TmdError

console = Console()
err_console = Console(stderr=True)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: over a file-size limit (ulimit -f)


def disk_full(e: BaseException) -> bool:
    """A write that failed for want of space, as Python raises it (OSError) or as Rust libraries
    (safetensors, tokenizers) word it: "... (os error 28)"."""
    if isinstance(e, OSError):
        return e.errno in _DISK_FULL
    return any(f"(os error {code})" in str(e) for code in _DISK_FULL)


def one_line_errors(func):
    """A command whose TmdError is one line on stderr and exit status 1; Ctrl-C says how to resume."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TmdError as e:
            print_error(str(e))
            sys.exit(1)
        except Exception as e:  # noqa: BLE001 - re-raised unless it is a full disk
            if not disk_full(e):
                raise
            # A write deep in a library (torch.save, safetensors, a converter) on a full disk: every
            # stage writes its "finished" marker last, so the same command resumes.
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            why = e.strerror if isinstance(e, OSError) else str(e).strip().splitlines()[-1][:120]
            print_error(f"{where}out of disk space ({why}); free some and rerun the same command: "
                        "what was finished is kept")
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
