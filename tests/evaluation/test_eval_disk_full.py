"""Issue #27: `tmd eval` on a full disk (a file-size limit) stops with one line, and its results
file holds only whole records; once space is back the same command answers only the questions
still missing, so every question is in the file exactly once."""

from __future__ import annotations

import json

import pytest

from disk_full_helpers import assert_one_line_disk_error, run_with_file_limit, tmd_command


@pytest.mark.slow
def test_eval_on_a_full_disk_stops_with_one_line_and_the_rerun_adds_only_what_is_missing(embedded_model, data_dir,
                                                                                        tmp_path):
    out = tmp_path / "r.jsonl"
    cmd = tmd_command("eval", "--dataset", "strategyqa", "--limit", "6", "--system", "mc", "--data-dir", data_dir,
                      "--out", out, "--threads", "1")
    full = run_with_file_limit(cmd, 2500)
    line = assert_one_line_disk_error(full)
    assert str(out) in line
    before = [json.loads(x) for x in out.read_text().splitlines()]  # every line whole: json.loads would fail
    assert 1 <= len(before) < 6
    again = run_with_file_limit(cmd, None)
    assert again.returncode == 0, again.stderr[-2000:]
    after = [json.loads(x) for x in out.read_text().splitlines()]
    ids = [r["id"] for r in after]
    assert len(ids) == len(set(ids)) == 6
    assert after[: len(before)] == before  # what was written before the disk filled is kept as it was
