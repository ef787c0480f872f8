"""Option types every command shares, so a number means the same thing, and is refused the same
way, in ask, eval, teach, train, export, app and serve.

A bad value is one line, `Error: --threads 0: expected a whole number from 1 to 512`, exit status 1,
raised while click parses the command line: before any model is loaded or any file is touched.
The ranges are the ones the runtime can honour: llama.cpp (ggml) runs at most 512 threads and
crashes beyond; n_ctx sizes buffers up front (4 GiB of token ids at 2^30), and 32768 is four times
what the small models tmd runs were trained on; seeds are llama.cpp's unsigned 32-bit ones (-1
there means "random", which a run that records its seed must not silently become); temperatures
stop at 2, OpenAI's own limit.
"""

from __future__ import annotations

import math

import click

from ..core.display import visible

MAX_THREADS = 512          # GGML_MAX_N_THREADS
MAX_N_CTX = 32_768
MAX_SEED = 2**32 - 1
MAX_TOKENS = 65_536


class OptionError(click.ClickException):
    """One line on stderr, exit status 1, like TmdError in the commands themselves."""

    def show(self, file=None) -> None:
        click.echo(f"Error: {visible(self.message, one_line=True)}", file=file, err=True)


def _shown(value) -> str:
    """The value as typed, quoted when it would not read as one word (empty, spaces)."""
    text = visible(value, one_line=True)
    text = text if len(text) <= 40 else text[:37] + "..."
    return text if text and not any(c.isspace() for c in text) else f"'{text}'"


def _flag(param) -> str:
    if param is None:
        return "value"
    names = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return names[0] if names else param.human_readable_name


class Whole(click.ParamType):
    """A whole number in [low, high]."""
    name = "integer"

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            try:
                number = int(text, 10)
            except ValueError:
                number = None
        if number is None or not self.low <= number <= self.high:
            raise OptionError(f"{_flag(param)} {_shown(value)}: expected {self.expected}")
        return number

    @property
    def expected(self) -> str:
        limit = "" if self.high == 10**9 else f" up to {self.high}"  # 10**9: count()'s "no real bound"
        if self.low in (0, 1):
            return ("a positive number" if self.low == 1 else "a number >= 0") + limit
        return f"a whole number from {self.low} to {self.high}"

    def __repr__(self) -> str:
        return f"Whole({self.low}, {self.high})"


class Real(click.ParamType):
    """A finite number in [low, high] (the low end open with low_open: e.g. seconds > 0)."""
    name = "number"

    def __init__(self, low: float, high: float, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        above = number > self.low if self.low_open else number >= self.low
        if not (math.isfinite(number) and above and number <= self.high):
            bound = f"more than {self.low:g}" if self.low_open else f"from {self.low:g}"
            raise OptionError(f"{_flag(param)} {_shown(value)}: expected a number {bound} "
                              f"to {self.high:g}")
        return number

    def __repr__(self) -> str:
        return f"Real({self.low}, {self.high})"


class Size(click.ParamType):
    """A memory size with its unit (600MB, 1.5GiB), more than zero; returned as the text given, so
    messages quote what the user wrote."""
    name = "size"

    def convert(self, value, param, ctx):
        from ..core.errors import TmdError
        from ..core.memory import parse_size

        try:
            size = parse_size(str(value))
        except TmdError as e:
            raise OptionError(f"{_flag(param)}: {e}") from None
        if size <= 0:
            raise OptionError(f"{_flag(param)} {_shown(value)}: expected a size above zero, e.g. 600MB")
        return str(value).strip()


class Words(click.ParamType):
    """Text from the command line: refused when it is not valid UTF-8 (bytes Python could only
    carry as lone surrogates, which can be neither tokenized nor written back)."""
    name = "text"

    def convert(self, value, param, ctx):
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise OptionError(f"{_flag(param)} {_shown(text)}: not valid UTF-8 text") from None
        return text


THREADS = Whole(1, MAX_THREADS)
N_CTX = Whole(64, MAX_N_CTX)
TEMPERATURE = Real(0.0, 2.0)
SEED = Whole(0, MAX_SEED)
SIZE = Size()
TEXT = Words()


def count(low: int = 1, high: int = 10**9) -> Whole:
    return Whole(low, high)
