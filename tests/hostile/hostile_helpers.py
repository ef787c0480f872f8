"""Helpers for the hostile-input tests (a plain module with a name no other test folder uses)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from click.testing import CliRunner

from tmd_local.cli import cli

MISSING_MODEL = "/nonexistent/model.gguf"  # stops a command right after its options are accepted


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


def one_line_error(result, *fragments: str) -> str:
    """The run failed cleanly: status 1 (or 2 for click's own usage errors), no traceback, and our
    errors are exactly one line starting with 'Error:' that holds every fragment."""
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error:"), result.output
    if result.exit_code == 1:
        assert len(lines) == 1, result.output
    assert "\x1b" not in result.output, result.output  # control codes are shown, never sent
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


QUESTION = {"id": "q0", "question": "Is the sun a star?", "options": {"A": "yes", "B": "no"}, "answer": "A"}


def result_record(i: int = 0, **changes) -> dict:
    """A minimal valid results line (docs/FORMATS.md §6), as tests/evaluation/test_report_learning.py uses."""
    config = {"system": "drd", "dataset": "strategyqa", "split": "test", "teacher": "gold",
              "models": {"drd": {"name": "m/drd", "file_type": "q8_0", "sha256": "s" * 64, "params": 1000}},
              "settings": {"n_ctx": 2048, "temperature": 0.0, "seed": 0}, "prompt_version": "v"}
    record = {"config": config, "id": f"q{i}", "gold": "A", "answer": "A", "correct": True,
              "stages": {"drd": {"peak_rss_mb": 300.0, "prompt_tokens": 10, "completion_tokens": 5,
                                 "seconds": 0.5}}, "wall_seconds": 1.0}
    record.update(changes)
    return record


def finishes_within(seconds: float, fn, *args, **kwargs):
    """fn(*args) in a daemon thread: (True, result or exception) if it ended in time, else (False, None)."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001
            box["value"] = e

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return (not thread.is_alive()), box.get("value")
