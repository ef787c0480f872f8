"""The `gold` teacher: StrategyQA's human annotations and the recorded ChatGPT rationales."""

from __future__ import annotations

import json
import re
from collections import Counter

from teacher.gold import rationale_answer, rationale_target
from tmd_local.core.gold import assign_facts, readable_subquestions
from teacher.rationale_kb import decompose, restates_answer, sentences, usable
from teacher.traces import numbered_steps
from teacher_helpers import all_records, ids_once, teach
from tmd_local.core.parsing import parse_answer, parse_subquestions
from tmd_local.core.prompts import PROMPT_VERSION

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


LEAK = re.compile(r"\b(?:option|correct|incorrect|answer|question)\b|\([A-D]\)", re.I)


def test_gold_obqa_builds_every_module_from_the_rationales_without_leaking_the_answer(data_dir, tmp_path):
    out = tmp_path / "gold"
    result = teach("--dataset", "obqa", "--limit", "30", "--teacher", "gold", "--out", out, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    files = all_records(out)
    questions = {q["id"]: q for q in map(json.loads, (data_dir / "obqa" / "train.jsonl").read_text().splitlines()[:30])}
    assert len(ids_once(files, "analyzer")) == 30
    decomposed = [r for r in files["analyzer"] if r["target"] != "No decomposition"]
    assert len(decomposed) >= 27  # nearly every OBQA rationale names its topic
    for rec in decomposed:
        assert parse_subquestions(rec["target"]) and rec["target"].startswith("1. What is known about ")
    assert len(files["informant"]) >= 27
    for rec in files["informant"]:
        q = questions[rec["id"].split("#")[0]]
        assert not LEAK.search(rec["target"]), rec["target"]
        assert not any(restates_answer(s, q["question"], q["options"][q["answer"]]) for s in sentences(rec["target"]))
    knowledge = {r["id"].split("#")[0]: r["target"] for r in files["informant"]}
    for rec in files["reasoner"]:  # the Reasoner reads exactly the Informant's targets
        if rec["id"] in knowledge:
            assert f"Knowledge: {knowledge[rec['id']]}" in rec["messages"][0]["content"]
    assert {r["reason"] for r in files["rejected"]} <= {"no_matching_rationale"}


def test_gold_answer_teacher_targets_are_the_bare_final_answer(data_dir, tmp_path):
    out = tmp_path / "answer"
    result = teach("--dataset", "obqa", "--limit", "8", "--teacher", "gold:answer", "--out", out, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    files = all_records(out)
    gold = {q["id"]: q["answer"] for q in map(json.loads, (data_dir / "obqa" / "train.jsonl").read_text().splitlines()[:8])}
    for module in ("drd", "reasoner"):
        assert len(files[module]) == 8
        assert all(r["target"] == f"Final Answer: {gold[r['id']]}" and r["teacher"] == "gold:answer"
                   for r in files[module])


def test_rationale_topic_becomes_a_question_asked_before_the_answer_is_known():
    rationales = ["This question requires some basic knowledge about evaporation and the sun. When water "
                  "is left in the sun, it evaporates due to the heat. Option (D) is correct because summer is hot.",
                  "This question requires basic knowledge about evaporation and the sun. When water is left "
                  "in the sun, the heat makes it evaporate. Option (A) is incorrect because shade is cool.",
                  "This question tests understanding of heat. Heat speeds up evaporation of water."]
    found = decompose("Lucy left a pan of water in the sun and it dried up.",
                      {"A": "it was in the shade", "D": "it was the summertime"}, "D", rationales)
    assert found.subquestions == ["What is known about evaporation and the sun?"]
    assert found.knowledge == ["When water is left in the sun, it evaporates due to the heat."]
    assert found.dropped["names_option_or_judges"] >= 2


def test_a_sentence_that_restates_question_and_answer_is_not_knowledge():
    question, correct = "A higher barometer reading means", "greater air pressure in the atmosphere"
    assert restates_answer("A higher barometer reading indicates greater air pressure in the atmosphere.",
                           question, correct)
    assert not restates_answer("Air pressure is the force exerted by the weight of the air above a point.",
                               question, correct)
    dropped = Counter()
    assert not usable("This is known as camouflage and helps the organism hide.", question, correct, dropped)
    assert dropped == {"leans_on_context": 1}


def test_no_topic_or_no_fact_means_no_decomposition():
    assert decompose("Q?", {"A": "x"}, "A", ["Option (A) is correct."]).subquestions == []
    assert decompose("Q?", {"A": "x"}, "A", ["This question requires knowledge about rocks. Option (A) is correct."]
                     ).dropped["no_fact"] == 1


def _gold_answers(data_dir, n):
    with open(data_dir / "strategyqa" / "train.jsonl") as f:
        rows = [json.loads(next(f)) for _ in range(n)]
    return {r["id"]: r["answer"] for r in rows}
