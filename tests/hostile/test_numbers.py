"""Category 7: every numeric option is checked at the command line with its range, the same way in
every command: a bad value is one line naming the flag, before anything runs; a good one passes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from hostile_helpers import MISSING_MODEL, invoke, one_line_error

INT, REAL = "int", "real"
# (kind, low, high, low_open) per flag: the ranges tmd documents (tmd_local/terminal/options.py).
RANGES = {
    "--threads": (INT, 1, 512, False), "--n-ctx": (INT, 64, 32768, False),
    "--temperature": (REAL, 0, 2, False), "--seed": (INT, 0, 2**32 - 1, False),
    "--limit": (INT, 1, 10**9, False), "--offset": (INT, 0, 10**9, False), "--seeds": (INT, 1, 1000, False),
    "--batch-size": (INT, 1, 10_000, False), "--concurrency": (INT, 1, 256, False),
    "--timeout": (REAL, 0, 86_400, True), "--retries": (INT, 0, 100, False), "--backoff": (REAL, 0, 3600, False),
    "--max-tokens": (INT, 1, 65_536, False), "--min-agreement": (REAL, 0, 1, True), "--lr": (REAL, 0, 1, True),
}


def commands(tmp):
    """Each command with arguments that stop it right after its options are accepted."""
    return {
        "ask": ["ask", "Q?", "--option", "A=y", "--option", "B=n", "--model", MISSING_MODEL],
        "eval": ["eval", "--dataset", "obqa", "--model", MISSING_MODEL, "--out", f"{tmp}/r.jsonl",
                 "--temperature", "0.5"],
        "teach": ["teach", "--dataset", "obqa", "--teacher", "gold", "--data-path", "/nonexistent/q.jsonl",
                  "--out", f"{tmp}/t"],
        "app": ["app", "--model", MISSING_MODEL],
        "serve": ["serve", "--model", MISSING_MODEL],
        "export": ["export", "--adapters", "/nonexistent/adapters", "--out", f"{tmp}/b"],
    }


OPTIONS = {
    "ask": ["--threads", "--n-ctx", "--temperature", "--seed"],
    "eval": ["--threads", "--n-ctx", "--temperature", "--limit", "--offset", "--seeds", "--batch-size"],
    "teach": ["--limit", "--concurrency", "--timeout", "--retries", "--backoff", "--max-tokens",
              "--temperature", "--n-ctx", "--threads"],
    "app": ["--n-ctx", "--threads", "--max-tokens"],
    "serve": ["--n-ctx", "--threads", "--seed"],  # declared once with ask's (tmd_local/terminal/runtime_options.py)
    "export": ["--threads", "--min-agreement"],
}
PAIRS = [(command, flag) for command, flags in OPTIONS.items() for flag in flags]

EDGES = ["0", "-1", "1", "nan", "NaN", "inf", "-inf", "1e309", "", " ", "1.5", "0.0", "-0", "2", "100000",
         "4294967297", "18446744073709551617", "0x10", "1_000", "३", "1e3", "abc", "\x1b[31m5", "[/x]"]
VALUES = st.one_of(st.sampled_from(EDGES), st.integers(-2**40, 2**40).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=6))


def accepted(flag: str, text: str) -> bool:
    kind, low, high, low_open = RANGES[flag]
    try:
        value = int(text.strip(), 10) if kind == INT else float(text)
    except ValueError:
        return False
    if kind == REAL and not math.isfinite(value):
        return False
    return (value > low if low_open else value >= low) and value <= high


@given(st.sampled_from(PAIRS), VALUES)
def test_every_numeric_option_in_every_command(tmp_path_factory, pair, value):
    command, flag = pair
    args = commands(tmp_path_factory.mktemp("n"))[command]
    line = one_line_error(invoke(*args, flag, value))
    if accepted(flag, value):
        assert flag not in line, line  # the value passed; the command stopped on what comes after
    else:
        assert line.startswith(f"Error: {flag} "), line


@pytest.mark.parametrize("args, fragment", [
    (["--threads", "100000"], "--threads 100000"),
    (["--threads", "0"], "--threads 0"),
    (["--threads", "-1"], "--threads -1"),
    (["--n-ctx", "4294967297"], "--n-ctx 4294967297"),
    (["--temperature", "nan"], "--temperature nan"),
    (["--seed", "-1"], "--seed -1"),
])
def test_the_examples_from_the_issue_in_ask(args, fragment):
    one_line_error(invoke("ask", "Q?", "--option", "A=y", "--option", "B=n", *args), fragment)


@pytest.mark.parametrize("args, fragment", [
    (["--batch-size", "0"], "--batch-size 0"), (["--batch-size", "-1"], "--batch-size -1"),
    (["--seeds", "0"], "--seeds 0: expected a positive number"), (["--max-memory", ""], "--max-memory"),
    (["--memory-budget", "0MB"], "--memory-budget 0MB"), (["--max-memory", "-5MB"], "--max-memory"),
])
def test_the_examples_from_the_issue_in_eval(tmp_path, args, fragment):
    line = one_line_error(invoke("eval", "--dataset", "obqa", "--out", tmp_path / "r.jsonl", *args), fragment)
    assert "greedy" not in line


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
@pytest.mark.parametrize("flag", ["--timeout", "--backoff"])
def test_teacher_timeouts(tmp_path, flag, value):
    if flag == "--backoff" and value == "0":
        return  # no backoff is a valid choice
    one_line_error(invoke("teach", "--dataset", "obqa", "--teacher", "gold", "--out", tmp_path, flag, value), flag)


@given(st.sampled_from(["", " ", "0", "0MB", "abc", "-1GB", "1e3MB", "MB", "1.5.5GB", "nanMB", "\x00"]))
def test_memory_sizes(size):
    for flag in ("--max-memory", "--memory-budget"):
        one_line_error(invoke("ask", "Q?", "--option", "A=y", "--option", "B=n", flag, size), flag)
        one_line_error(invoke("app", flag, size), flag)
