"""tmd report on results lines of the shape `tmd eval` writes: scored vs stated accuracy, the
majority class, mc's acc_norm, the learning curve over training questions, and the error-source rows
(the same Reasoner with the Analyzer's or the gold subquestions, the Informant's or the gold facts)."""

import json

import pytest

from tmd_local.evaluation.comparisons import mcnemar_p
from tmd_local.evaluation.curve import size_columns
from tmd_local.evaluation.report import readme_table, write_report
from tmd_local.evaluation.rows import fold_seeds, load_results, majority_rate, training_label

GOLD_FACTS = ["Apollo 13 was recovered by the USS Iwo Jima.", "Iwo Jima was a World War II battle."]
QUESTION = {"question": "Was the ship that recovered Apollo 13 named after a World War II battle?",
            "options": {"A": "yes", "B": "no"},
            "extra": {"decomposition": ["Which ship recovered Apollo 13?", "What was #1 named for?",
                                        "Did #2 occur during World War II?"],
                      "facts": GOLD_FACTS,
                      "evidence": [[[["a"]], [["b"]], ["operation"]]]}}


def config(system, bundle=None, questions=None, quant="q8_0"):
    roles = {"tmd": ("analyzer", "informant", "reasoner"), "drd": ("drd",), "mc": ("drd",),
             "tmd-gold-subq": ("informant", "reasoner"), "tmd-gold-facts": ("reasoner",)}[system]
    models = {}
    for role in roles:
        model = {"name": f"{bundle or 'smollm2'}/{role}", "file_type": quant if bundle else "q4_1",
                 "sha256": f"{bundle}-{role}-{quant}", "params": 1000}
        if bundle:
            model.update(mode="merged", training={"questions": questions, "examples": questions,
                                                  "steps": questions // 8, "epochs": 1.0})
        models[role] = model
    return {"system": system, "dataset": "strategyqa", "split": "test",
            "teacher": "gold:rationale" if bundle else "none (zero-shot base model)", "models": models,
            "settings": {"n_ctx": 2048, "temperature": 0.0, "seed": 0}, "prompt_version": "v"}


def write(path, cfg, answers: list[str], stated: list, golds: list[str], **fields):
    with path.open("a") as f:
        for i, (answer, said, gold) in enumerate(zip(answers, stated, golds)):
            stages = {r: {"peak_rss_mb": 300, "prompt_tokens": 10, "completion_tokens": 5, "seconds": 0.5}
                      for r in cfg["models"]}
            record = {"config": cfg, "id": f"q{i}", "gold": gold, "answer": answer, "correct": answer == gold,
                      "stated_answer": said, "answer_source": "stated" if said == answer else "scored",
                      "option_probs": {"A": 0.6, "B": 0.4}, "question": {"id": f"q{i}", "answer": gold, **QUESTION},
                      "subquestions": fields.get("subquestions", []), "knowledge": fields.get("knowledge", []),
                      "stages": stages, "wall_seconds": 1.0}
            if "answer_norm" in fields:
                record["answer_norm"] = fields["answer_norm"][i]
            if "before" in fields:  # the letter the module favours before it reasons
                record["raw"] = {"option_probs_before_reasoning": {"A": 0.3, "B": 0.7} if fields["before"][i] == "B"
                                 else {"A": 0.7, "B": 0.3}}
            f.write(json.dumps(record) + "\n")


GOLDS = ["B", "B", "B", "A"]  # majority class: B, 75%


def test_scored_and_stated_accuracy_majority_and_acc_norm(tmp_path):
    results = tmp_path / "r.jsonl"
    write(results, config("tmd", "sqa400", 380), ["B", "B", "A", "A"], ["B", None, None, "B"], GOLDS)
    write(results, config("mc"), ["B", "B", "B", "B"], [None] * 4, GOLDS, answer_norm=["A", "B", "B", "A"])
    rows = fold_seeds(load_results([results]))
    table = "\n".join(readme_table(rows, tmp_path / "report.md", [results]))
    assert "always answering B scores 75.0%" in table
    tmd_line = next(line for line in table.splitlines() if "| TMD |" in line)
    assert "| 75.0 (" in tmd_line and "| 25.0 | 50% |" in tmd_line  # scored 3/4; stated 1/4 right, 2/4 stated
    assert "analyzer, informant, reasoner (380 q, 1 ep)" in tmd_line
    mc_line = next(line for line in table.splitlines() if "| MC |" in line)
    assert "acc_norm 75.0" in mc_line
    assert majority_rate([{"gold": g} for g in GOLDS]) == ("B", 0.75)
    assert training_label(config("drd")) == "none (zero-shot)"


def test_training_label_names_the_learning_rate_when_the_results_record_it():
    cfg = config("drd", "sqa400", 379)
    cfg["models"]["drd"]["training"]["lr"] = 1e-3
    assert training_label(cfg) == "drd (379 q, 1 ep, lr 0.001)"


def test_the_export_adds_the_learning_rate_of_adapters_trained_before_it_was_recorded():
    from tmd_local.core.formats import AdapterMeta

    def meta(**fields) -> AdapterMeta:
        return AdapterMeta.from_json({"module": "drd", **fields}, "tmd.json")

    old = meta(training={"questions": 379, "epochs": 1.0}, hyperparameters={"lr": 1e-4})
    assert old.results_training() == {"questions": 379, "epochs": 1.0, "lr": 1e-4}
    new = meta(training={"questions": 379, "epochs": 1.0, "lr": 3e-4}, hyperparameters={"lr": 3e-4})
    assert new.results_training()["lr"] == 3e-4
    assert meta(hyperparameters={"lr": 1e-4}).results_training() is None


def test_learning_curve_and_error_sources(tmp_path):
    results = tmp_path / "r.jsonl"
    for n, right in ((100, 1), (400, 2), (1603, 3)):
        answers = [g if i < right else ("A" if g == "B" else "B") for i, g in enumerate(GOLDS)]
        write(results, config("tmd", f"sqa{n}", n), answers, answers, GOLDS,
              subquestions=["Which ship recovered Apollo 13?"])
        # one teacher run trains DRD on a question or two fewer than the Reasoner (its filter differs)
        write(results, config("drd", f"sqa{n}", n - (n == 1603)), answers, answers, GOLDS)
    write(results, config("drd"), ["A"] * 4, ["A"] * 4, GOLDS)
    dev = {**config("drd", "sqa50", 50), "split": "train"}  # a choice on held-out train: no curve point
    write(results, dev, GOLDS, GOLDS, GOLDS)
    other_rate = config("tmd", "sqa400-lr", 400)  # one size only, on 2 of the 4 questions: no line
    other_rate["models"]["reasoner"]["training"]["lr"] = 1e-3
    write(results, other_rate, GOLDS[:2], GOLDS[:2], GOLDS[:2])
    three_epochs = config("tmd", "sqa1603-e3", 1603)  # one size only, on every question: a lone point
    three_epochs["models"]["reasoner"]["training"]["epochs"] = 3.0
    write(results, three_epochs, GOLDS, GOLDS, GOLDS)
    write(results, config("tmd-gold-subq", "sqa1603", 1603), GOLDS, GOLDS, GOLDS,
          subquestions=["x"], knowledge=["Apollo 13 was recovered by the USS Iwo Jima.", "nothing", ""])
    write(results, config("tmd-gold-facts", "sqa1603", 1603), GOLDS, GOLDS, GOLDS)
    for system in ("tmd", "tmd-gold-facts"):  # the same rows on held-out train questions: after test
        write(results, {**config(system, "sqa1603", 1603), "split": "train"}, GOLDS, GOLDS, GOLDS)
    report = write_report([results], tmp_path / "reports" / "report.md")
    text = report.read_text()
    assert (tmp_path / "reports" / "learning_curve.png").stat().st_size > 10_000
    assert "![learning_curve](learning_curve.png)" in text
    curve = text.split("## Learning curve (strategyqa, the same 4 test questions)")[1].split("##")[0]
    assert "| system | 100 q | 400 q | 1602-1603 q |" in curve  # one column for one teacher run
    assert "| DRD q8_0, gold:rationale, 1 ep | 25.0 | 50.0 | 75.0 |" in curve
    assert "| TMD q8_0, gold:rationale, 1 ep | 25.0 | 50.0 | 75.0 |" in curve
    assert "lr 0.001" not in curve  # the single-size configuration that missed questions
    assert "| TMD q8_0, gold:rationale, 1/3 ep | - | - | 100.0 |" in curve
    assert "- DRD zero-shot smollm2 q4_1: 25.0" in curve
    assert "- majority class (B): 75.0" in curve
    section = text.split("## Where the errors come from")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| strategyqa")]
    assert len(rows) == 5 and all(r.startswith("| strategyqa (train) |") for r in rows[3:])
    assert "| 75.0 (" in rows[0] and "Analyzer F1" in rows[0]             # TMD as it runs
    assert "| 100.0 (" in rows[1] and "Informant F1" in rows[1]           # gold subquestions
    assert "| 100.0 (" in rows[2] and "perfect knowledge" in rows[2]  # gold subquestions + facts
    f1 = float(rows[1].split("Informant F1 ")[1].split()[0])
    assert 0.3 < f1 < 1.0  # one exact fact, one miss


def test_reasoning_worth_compares_answers_before_and_after_the_reasoning(tmp_path):
    results = tmp_path / "r.jsonl"
    write(results, config("drd", "sqa1603", 1603), ["B", "A", "A", "B"], ["B", None, "A", "B"], GOLDS,
          before=["B", "B", "B", "B"])  # after: 1 of 4 right; before: always B, 3 of 4
    write(results, config("mc"), GOLDS, [None] * 4, GOLDS)  # no reasoning: no row
    with results.open("a") as f:  # a hand-edited record whose raw is no object: left out, no traceback
        broken = json.loads(results.read_text().splitlines()[0])
        f.write(json.dumps({**broken, "id": "q9", "raw": ["x"]}) + "\n")
    text = write_report([results], tmp_path / "report.md").read_text()
    section = text.split("## Does the generated reasoning help?")[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # past the header
    assert len(rows) == 1 and rows[0].startswith("| DRD | strategyqa |")
    assert "| 4 | 25.0 (" in rows[0] and "| 75.0 (" in rows[0] and rows[0].endswith("| 50% |")


def test_sizes_a_question_or_two_apart_share_a_column():
    assert size_columns({95, 379, 1518, 1519}) == [[95], [379], [1518, 1519]]
    assert size_columns({100, 101, 400}) == [[100, 101], [400]]
    assert size_columns({100, 110}) == [[100], [110]]


def test_tmd_against_drd_counts_the_questions_only_one_got_right(tmp_path):
    results = tmp_path / "r.jsonl"
    write(results, config("tmd", "sqa1603", 1603), ["B", "B", "B", "B"], ["B"] * 4, GOLDS)  # 3 of 4
    write(results, config("drd", "sqa1603", 1603), ["A", "A", "B", "A"], ["A"] * 4, GOLDS)  # 2 of 4
    text = write_report([results], tmp_path / "report.md").read_text()
    section = text.split("## TMD against DRD, question by question")[1].split("##")[0]
    row = next(line for line in section.splitlines() if line.startswith("| strategyqa"))
    # q0, q1: only TMD right; q3: only DRD right
    assert row == "| strategyqa | sqa1603 q8_0 | 4 | 75.0 | 50.0 | +25.0 | 2 / 1 | 1.00 |"


def test_mcnemar_p_is_the_exact_two_sided_binomial():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 0) == 2 / 32
    assert mcnemar_p(0, 10) == 2 / 1024
    assert mcnemar_p(30, 30) == 1.0
    assert 0.04 < mcnemar_p(60, 40) < 0.06  # 100 discordant, 60/40: p about 0.057


# --- where the report goes: the user's results folder; the checkout's published places on --publish --

def invoke(*args):
    from click.testing import CliRunner

    from tmd_local.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *fragments):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def files_in(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


SECTIONS = ("# Results\nintro\n<!-- tmd report: begin -->\nunnamed figures\n<!-- tmd report: end -->\n"
            "between\n<!-- tmd report: begin obqa -->\nold obqa\n<!-- tmd report: end obqa -->\nmiddle\n"
            "<!-- tmd report: begin obqa-validation -->\nold validation\n<!-- tmd report: end obqa-validation -->\n"
            "end\n")


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A checkout-like folder standing in for the source tree (paths.CODE_ROOT), as the working
    directory: its reports/, README.md and docs/RESULTS.md are the published places. The real
    checkout is never the target, even of a relative path, whatever the code under test does."""
    from tmd_local.core import paths

    root = tmp_path / "checkout"
    (root / "tmd_local").mkdir(parents=True)
    (root / "reports").mkdir()
    (root / "reports" / "report.md").write_text("the project's report\n")
    (root / "reports" / "accuracy_vs_flops.png").write_bytes(b"png")
    (root / "docs").mkdir()
    (root / "docs" / "RESULTS.md").write_text(SECTIONS)
    (root / "README.md").write_text(SECTIONS)
    monkeypatch.setattr(paths, "CODE_ROOT", root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("TMD_HOME", str(tmp_path / "home"))
    write(root / "r.jsonl", config("drd"), ["A", "B", "B", "A"], [None] * 4, GOLDS)
    return root


def test_the_default_out_is_the_users_results_folder(checkout, tmp_path):
    before = files_in(checkout)
    made = invoke("report", "r.jsonl")
    assert made.exit_code == 0, made.output
    results = tmp_path / "home" / "results"
    assert "| DRD |" in (results / "report.md").read_text()
    assert (results / "accuracy_vs_flops.png").stat().st_size > 1000
    assert str(results / "report.md") in made.output
    assert files_in(checkout) == before  # nothing of the checkout rewritten


@pytest.mark.parametrize("args, flag, place", [
    (["--out", "reports/x.md"], "--out reports/x.md", "reports/"),
    (["--out", "reports/sub/report.md"], "--out reports/sub/report.md", "reports/"),
    (["--out", "report.md"], "--out report.md", "report.md"),
    (["--out", "elsewhere/r.md", "--results-doc", "README.md"], "--results-doc README.md", "README.md"),
    (["--out", "elsewhere/r.md", "--results-doc", "docs/RESULTS.md", "--section", "obqa"],
     "--results-doc docs/RESULTS.md", "docs/"),
    (["--out", "elsewhere/r.md", "--readme", "README.md"], "--results-doc README.md", "README.md"),
])
def test_the_checkouts_published_places_need_publish(checkout, args, flag, place):
    before = files_in(checkout)
    one_line_error(invoke("report", "r.jsonl", *args), flag, f"published {place}", "pass --publish")
    assert files_in(checkout) == before  # refused before any folder or file was made


def test_publish_writes_the_checkouts_report_and_documents(checkout):
    made = invoke("report", "r.jsonl", "--out", "reports/report.md", "--results-doc", "README.md",
                  "--results-doc", "docs/RESULTS.md", "--publish")
    assert made.exit_code == 0, made.output
    assert "| DRD |" in (checkout / "reports" / "report.md").read_text()
    assert (checkout / "reports" / "accuracy_vs_flops.png").stat().st_size > 1000
    for doc in ("README.md", "docs/RESULTS.md"):
        text = (checkout / doc).read_text()
        assert "unnamed figures" not in text and "| strategyqa | DRD |" in text
        assert f"--out reports/report.md --results-doc {doc} --publish`" in text
        assert "old obqa" in text and "old validation" in text  # the named sections are others


def test_a_named_section_is_replaced_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "r.jsonl"
    write(results, config("drd"), ["A", "B", "B", "A"], [None] * 4, GOLDS)
    doc = tmp_path / "RESULTS.md"
    doc.write_text(SECTIONS)
    for section, old in (("obqa", "old obqa"), ("obqa-validation", "old validation")):
        before = doc.read_text()
        made = invoke("report", results, "--out", tmp_path / "rep" / "r.md", "--results-doc", doc,
                      "--section", section)
        assert made.exit_code == 0, made.output
        text = doc.read_text()
        begin, end = f"<!-- tmd report: begin {section} -->\n", f"<!-- tmd report: end {section} -->"
        assert before.split(begin)[0] == text.split(begin)[0]  # everything before the section
        assert before.split(end)[1] == text.split(end)[1]      # and after it, byte for byte
        inside = text.split(begin)[1].split(end)[0]
        assert old not in inside and "| strategyqa | DRD |" in inside and f"--section {section}`" in inside
    assert "unnamed figures" in doc.read_text()


@pytest.mark.parametrize("text, section, found", [
    ("no markers\n", None, "found 0 begin, 0 end"),
    (SECTIONS, "medqa", "found 0 begin, 0 end"),
    (SECTIONS + "<!-- tmd report: begin obqa -->\n", "obqa", "found 2 begin, 1 end"),
    ("<!-- tmd report: end -->\n<!-- tmd report: begin -->\n", None, "found 1 begin, 1 end"),
])
def test_a_document_without_one_pair_of_markers_is_an_error_and_nothing_is_written(tmp_path, text, section,
                                                                                  found):
    results = tmp_path / "r.jsonl"
    write(results, config("drd"), ["A", "B", "B", "A"], [None] * 4, GOLDS)
    doc = tmp_path / "RESULTS.md"
    doc.write_text(text)
    args = ["--section", section] if section else []
    one_line_error(invoke("report", results, "--out", tmp_path / "rep" / "r.md", "--results-doc", doc, *args),
                   "RESULTS.md: expected exactly one pair of markers", found)
    assert doc.read_text() == text and not (tmp_path / "rep").exists()


def test_a_section_needs_a_document_and_a_plain_name(tmp_path):
    results = tmp_path / "r.jsonl"
    write(results, config("drd"), ["A", "B", "B", "A"], [None] * 4, GOLDS)
    one_line_error(invoke("report", results, "--out", tmp_path / "r.md", "--section", "obqa"), "--results-doc")
    doc = tmp_path / "RESULTS.md"
    doc.write_text(SECTIONS)
    one_line_error(invoke("report", results, "--out", tmp_path / "r.md", "--results-doc", doc,
                          "--section", "a -->"), "--section 'a -->'")
    assert not (tmp_path / "r.md").exists()
