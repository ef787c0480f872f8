"""SIGKILL `tmd teach` mid-run, rerun the same command: every question ends up exactly once, every
file parses, and calls journaled before the kill are not asked again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from teacher.journal import Journal
from teacher_helpers import all_records, ids_once, read_lines, teach

CALLS_PER_QUESTION = 5  # analyzer, 2 informants, reasoner, drd with the scripted teacher


def test_killed_run_resumes_without_duplicates(fake_api, questions_file, tmp_path):
    api = fake_api(delay=0.15)  # slow enough for the kill to land mid-run
    out = tmp_path / "teacher"
    cmd = [sys.executable, "-m", "tmd_local", "teach", "--dataset", "strategyqa", "--data-path",
           str(questions_file), "--teacher", "openai:fake", "--base-url", api.url, "--out", str(out),
           "--concurrency", "2"]
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "journal.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or journal.read_bytes().count(b"\n") < 7):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    journaled = len(Journal(out))
    assert 7 <= journaled < 4 * CALLS_PER_QUESTION, "the kill should land mid-run"
    assert not (out / "summary.json").exists()

    asked_before = len(api.requests)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    asked_after = len(api.requests) - asked_before
    assert asked_after == 4 * CALLS_PER_QUESTION - journaled  # nothing journaled is asked again

    files = all_records(out)
    for module in ("analyzer", "reasoner", "drd"):
        assert sorted(ids_once(files, module)) == ["q0", "q1", "q2", "q3"]
    assert len(ids_once(files, "informant")) == 8
    keys = [(r["qid"], r["stage"], r["index"]) for r in read_lines(journal)]
    assert len(keys) == len(set(keys)) == 4 * CALLS_PER_QUESTION
    summary = json.loads((out / "summary.json").read_text())
    assert summary["new_questions"] + summary["resumed_questions"] == 4
    assert not list(out.glob(".*.tmp"))


def test_torn_journal_line_is_cut_and_asked_again(fake_api, questions_file, tmp_path):
    api = fake_api()
    out = tmp_path / "teacher"
    args = ["--dataset", "strategyqa", "--data-path", questions_file, "--teacher", "openai:fake",
            "--base-url", api.url, "--out", out, "--limit", "1"]
    assert teach(*args, env={"OPENAI_API_KEY": "k"}).exit_code == 0
    journal = out / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a kill mid-write
    asked = len(api.requests)
    assert teach(*args, env={"OPENAI_API_KEY": "k"}).exit_code == 0
    assert len(api.requests) - asked == 1
    assert len(read_lines(journal)) == CALLS_PER_QUESTION
