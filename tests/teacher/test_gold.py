"""The `gold` teacher: StrategyQA's human annotations and the recorded ChatGPT rationales."""

from __future__ import annotations

import json

from teacher.gold import rationale_answer, rationale_target
from tmd_local.gold import assign_facts, readable_subquestions
from teacher.traces import numbered_steps
from teacher_helpers import all_records, ids_once, teach
from tmd_local.parsing import parse_answer, parse_subquestions
from tmd_local.prompts import PROMPT_VERSION

YES_NO = {"A": "yes", "B": "no"}


def test_references_read_as_text_and_every_line_is_a_question():
    subquestions = readable_subquestions(["When was the RAF formed?", "Where is Mount Sharp located",
                                          "Is #1 before #2?", "#2 is in which country?"])
    assert subquestions == ["When was the RAF formed?", "Where is Mount Sharp located?",
                            "Is the answer to subquestion 1 before the answer to subquestion 2?",
                            "The answer to subquestion 2 is in which country?"]


def test_facts_go_to_the_subquestion_they_answer_not_just_in_order():
    subquestions = ["When was the Royal Air Force formed?", "In what year did the Boxer Rebellion end?",
                    "Is the answer to subquestion 1 before the answer to subquestion 2?"]
    facts = ["The Boxer Rebellion took place from 1899-1901", "The Royal Air Force was formed on 1 April 1918"]
    assert assign_facts(subquestions, facts, [0, 1]) == [facts[1], facts[0], ""]


def test_leftover_facts_join_the_closest_subquestion():
    knowledge = assign_facts(["What do pandas eat?", "Where do pandas live?"],
                             ["Pandas eat bamboo.", "Pandas live in China.", "Bamboo grows fast."], [0, 1])
    assert knowledge == ["Pandas eat bamboo. Bamboo grows fast.", "Pandas live in China."]


def test_rationales_become_numbered_steps_with_one_final_answer():
    text = "First, fish live in water.\n\nSo the correct answer is (B) no.\nFinal answer: (B)\nHope it helps."
    target = rationale_target(text, "B")
    assert target == "1. First, fish live in water.\n2. So the correct answer is (B) no.\nFinal Answer: B"
    assert numbered_steps("One. Two three. Four?") == "1. One.\n2. Two three.\n3. Four?"


def test_a_rationale_that_names_the_correct_option_counts_as_answering_it():
    options = {"A": "a tree", "B": "a robot", "C": "a house", "D": "a car"}
    assert rationale_answer("Option (B) is incorrect. Option (A) is the correct answer.", options) == "A"
    assert rationale_answer("Option (A) is correct. Option (B) is the best choice.", options) is None
    assert rationale_answer("Trees are alive.", options) is None


def test_gold_strategyqa_slice(data_dir, tmp_path):
    out = tmp_path / "gold"
    result = teach("--dataset", "strategyqa", "--limit", "5", "--teacher", "gold", "--out", out,
                   "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    files = all_records(out)
    assert len(ids_once(files, "analyzer")) == len(ids_once(files, "drd")) == 5
    for rec in files["analyzer"]:
        assert rec["teacher"] == "gold:rationale" and rec["prompt_version"] == PROMPT_VERSION
        subquestions = parse_subquestions(rec["target"])
        assert 1 <= len(subquestions) and "#" not in rec["target"]
        assert rec["target"] == "\n".join(f"{i}. {s}" for i, s in enumerate(subquestions, 1))  # round trip
    for rec in files["informant"]:
        qid, _, index = rec["id"].partition("#")
        assert qid and index.isdigit() and int(index) >= 1
    gold = _gold_answers(data_dir, 5)
    for rec in files["reasoner"] + files["drd"]:
        assert rec["target"].endswith(f"\nFinal Answer: {gold[rec['id']]}")
        assert parse_answer(rec["target"], YES_NO) == gold[rec["id"]]
        assert rec["target"].startswith("1. ")
    drd = {r["id"]: r["target"] for r in files["drd"]}
    for rec in files["reasoner"]:  # the default: the Reasoner learns DRD's rationale, given the facts
        assert rec["target"] == drd[rec["id"]] and "Knowledge: " in rec["messages"][0]["content"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"] == "gold:rationale" and summary["questions"] == 5 and summary["limit"] == 5
    assert summary["modules"]["informant"]["kept"] == len(files["informant"])


def test_gold_facts_reasoner_builds_steps_from_the_facts(data_dir, tmp_path):
    out = tmp_path / "gold"
    result = teach("--dataset", "strategyqa", "--limit", "5", "--teacher", "gold:facts", "--out", out,
                   "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    files = all_records(out)
    drd = {r["id"]: r["target"] for r in files["drd"]}
    assert files["reasoner"] and all(r["teacher"] == "gold:facts" for r in files["reasoner"])
    for rec in files["reasoner"]:
        assert rec["target"] != drd.get(rec["id"]) and '\nFinal Answer: ' in rec["target"]
        assert "So the answer to" in rec["target"]


def test_gold_unknown_reasoner_target_is_one_line(data_dir, tmp_path):
    result = teach("--dataset", "strategyqa", "--limit", "1", "--teacher", "gold:magic", "--out",
                   tmp_path / "g", "--data-dir", data_dir)
    assert result.exit_code == 1 and "rationale, facts" in result.output


def test_gold_obqa_has_reasoning_targets_only(data_dir, tmp_path):
    out = tmp_path / "gold"
    result = teach("--dataset", "obqa", "--limit", "5", "--teacher", "gold", "--out", out, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    assert "skipped analyzer/informant for 5 questions" in result.output
    files = all_records(out)
    assert files["analyzer"] == [] and files["informant"] == []
    assert len(ids_once(files, "drd")) == len(ids_once(files, "reasoner")) == 5
    for rec in files["reasoner"]:
        assert "None (the question needs no decomposition)." in rec["messages"][0]["content"]
    assert {r["reason"] for r in files["rejected"]} <= {"no_matching_rationale"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"]["analyzer"] == 5


def _gold_answers(data_dir, n):
    with open(data_dir / "strategyqa" / "train.jsonl") as f:
        rows = [json.loads(next(f)) for _ in range(n)]
    return {r["id"]: r["answer"] for r in rows}
