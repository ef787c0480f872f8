"""The `tmd` command as a user runs it: one-line errors, JSON output, resumable eval."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from tmd_local.cli import cli

FOG = ["There is most likely going to be fog around:", "--option", "A=a marsh", "--option", "B=a tundra",
       "--option", "C=the plains", "--option", "D=a desert"]


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("args, message", [
    (["ask", "Q?", "--option", "A=yes"], "--option: expected at least two"),
    (["ask", "Q?", "--option", "A=yes", "--option", "no"], "--option 'no': expected LETTER=TEXT"),
    (["ask", "Q?", "--option", "A=yes", "--option", "A=no"], "--option A: given twice"),
    (["ask", "Q?", "--option", "A=yes", "--option", "B=no", "--model", "nope"], "model 'nope': no such file"),
    (["eval", "--dataset", "obqa", "--data-path", "/nonexistent.jsonl"], "/nonexistent.jsonl: no such file"),
    (["eval", "--dataset", "obqa", "--limit", "0"], "--limit 0: expected a positive number"),
    (["eval", "--dataset", "obqa", "--seeds", "3"], "--seeds 3: greedy decoding"),
    (["report", "nothing.jsonl"], "nothing.jsonl: no such results file"),
])
def test_bad_input_is_one_line_error(args, message):
    result = invoke(*args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_ask_json_trace(embedded_model):
    result = invoke("ask", *FOG, "--json")
    assert result.exit_code == 0, result.output
    trace = json.loads(result.output)
    assert trace["system"] == "tmd" and set(trace["stages"]) >= {"analyzer", "reasoner"}
    assert "analyzer" in trace["raw"] and "reasoner" in trace["raw"]
    assert trace["answer"] in (None, "A", "B", "C", "D")


@pytest.mark.slow
def test_four_options_use_the_shipped_students_unless_zero_shot(embedded_model):
    shipped = invoke("ask", *FOG, "--json", "--system", "drd", "--n-ctx", "1024")
    assert shipped.exit_code == 0, shipped.output
    assert json.loads(shipped.output)["stages"]["drd"]["model"] == "openbook-135m/drd"
    base = invoke("ask", *FOG, "--json", "--system", "drd", "--n-ctx", "1024", "--zero-shot")
    assert base.exit_code == 0, base.output
    assert json.loads(base.output)["stages"]["drd"]["model"] == "smollm2-135m-instruct"
    yes_no = invoke("ask", "Is fog wet?", "--option", "A=yes", "--option", "B=no", "--json", "--system", "drd")
    assert json.loads(yes_no.output)["stages"]["drd"]["model"] == "smollm2-135m-instruct"


@pytest.mark.slow
def test_eval_writes_labelled_results_and_resumes(embedded_model, data_dir, workdir):
    args = ["eval", "--dataset", "strategyqa", "--split", "test", "--limit", "2", "--system", "drd",
            "--data-dir", str(data_dir), "--out", "r.jsonl"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    lines = [json.loads(x) for x in (workdir / "r.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(r["answer"] in (None, "A", "B") for r in lines)
    config = lines[0]["config"]
    assert config["models"]["drd"]["name"] == "smollm2-135m-instruct" and len(config["models"]["drd"]["sha256"]) == 64
    assert config["teacher"].startswith("none") and config["dataset"] == "strategyqa"
    assert config["models"]["drd"]["file_type"] == "q4_1" and config["models"]["drd"]["params"] > 1e8
    [summary] = json.loads((workdir / "r.summary.json").read_text())
    assert summary["n"] == 2 and 0 <= summary["ci95"][0] <= summary["accuracy"] <= summary["ci95"][1] <= 1

    made = invoke("report", "r.jsonl", "--out", "rep/report.md")
    assert made.exit_code == 0, made.output
    text = (workdir / "rep" / "report.md").read_text()
    assert "| DRD | smollm2-135m-instruct q4_1 | none (zero-shot base model) | none (zero-shot) |" in text
    assert (workdir / "rep" / "accuracy_vs_flops.png").stat().st_size > 1000
    assert (workdir / "rep" / "accuracy_vs_memory.png").stat().st_size > 1000

    readme = workdir / "README.md"
    readme.write_text("# x\nbefore\n<!-- tmd report: begin -->\nold figures\n<!-- tmd report: end -->\nafter\n")
    assert invoke("report", "r.jsonl", "--out", "rep/report.md", "--readme", "README.md").exit_code == 0
    text = readme.read_text()
    assert "old figures" not in text and text.startswith("# x\nbefore\n") and text.endswith("\nafter\n")
    assert "| strategyqa | DRD | smollm2-135m-instruct q4_1 | none (zero-shot base model) | none (zero-shot) | 2 |" in text
    readme.write_text("no markers")
    unmarked = invoke("report", "r.jsonl", "--readme", "README.md")
    assert unmarked.exit_code == 1 and "README.md: expected exactly one pair of markers" in unmarked.output

    again = invoke(*args, "--threads", "1")  # done (threads change speed, not answers): nothing recomputed
    assert again.exit_code == 0
    assert len((workdir / "r.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_eval_killed_mid_run_resumes_without_duplicates(embedded_model, data_dir, workdir):
    out = workdir / "k.jsonl"
    cmd = [sys.executable, "-m", "tmd_local", "eval", "--dataset", "obqa", "--split", "test", "--limit", "4",
           "--system", "drd", "--data-dir", str(data_dir), "--out", str(out),
           "--batch-size", "1"]  # results land question by question, so a kill can fall between them
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 1):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = out.read_text().count("\n")
    assert 1 <= done_before < 4, "the kill should land mid-run"

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert len(ids) == 4 and len(set(ids)) == 4
