"""Text from users, files and models, made safe to show.

Rich reads "[...]" in a printed string as markup ("[/x]" raises MarkupError, "[red]B" loses the
text), and terminals obey control characters (an ANSI escape in a question can recolour or clear
the screen). Everything tmd prints that it did not write itself goes through these helpers: control
characters and lone surrogates become visible escapes such as \\x1b, and markup is escaped.
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
_CONTROL_OR_NEWLINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def _escape_char(match: re.Match) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, one_line: bool = False) -> str:
    """`text` with control characters (and, one_line, newlines and tabs) shown as escapes."""
    return (_CONTROL_OR_NEWLINE if one_line else _CONTROL).sub(_escape_char, str(text))


def markup_safe(text: object, one_line: bool = False) -> str:
    """visible(text), with Rich markup escaped, to embed in a string that is printed as markup."""
    from rich.markup import escape

    return escape(visible(text, one_line))


def plain(text: object, style: str = "", one_line: bool = False):
    """A rich Text (never parsed as markup) of visible(text), for tables, panels and widgets."""
    from rich.text import Text

    return Text(visible(text, one_line), style=style)
