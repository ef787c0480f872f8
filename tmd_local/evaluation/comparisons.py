"""The report's question-by-question comparisons, as Markdown lines: where TMD's errors come from
(the same Reasoner given gold inputs), whether the generated reasoning helps (answers before and
after it), and TMD against DRD on the same questions with an exact McNemar test."""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict

from ..core.gold import gold_knowledge, subquestion_overlap, token_f1
from ..core.records import Question
from .evaluate import wilson_interval
from .rows import Row, dataset_label, student_label, tuned_label

# --- where TMD's errors come from --------------------------------------------------------------

ERROR_SOURCE_SYSTEMS = (("tmd", "TMD: Analyzer -> Informant -> Reasoner"),
                        ("tmd-gold-subq", "gold subquestions -> Informant -> Reasoner"),
                        ("tmd-gold-facts", "gold subquestions + gold facts -> Reasoner (perfect knowledge)"))


def _reasoner_family(config: dict) -> tuple:
    """Rows whose Reasoner is the same model on the same data: TMD and its gold-input variants."""
    reasoner = config["models"].get("reasoner", {})
    return (config["dataset"], config["split"], config["teacher"], reasoner.get("sha256"),
            reasoner.get("adapter_sha256"))


def error_source_table(rows: list[Row]) -> list[str]:
    families: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for row in rows:
        if row.config["system"] in dict(ERROR_SOURCE_SYSTEMS):
            families[_reasoner_family(row.config)][row.config["system"]] = row
    lines = []
    test_first = sorted(families.items(), key=lambda item: (item[0][0], item[0][1] != "test", str(item[0])))
    for (dataset, split, *_), by_system in test_first:
        if len(by_system) < 2:
            continue
        common = set.intersection(*(set(r.runs[0].records) for r in by_system.values()))
        if not common:
            continue
        student = student_label(next(iter(by_system.values())).config)
        for system, label in ERROR_SOURCE_SYSTEMS:
            row = by_system.get(system)
            if row is None:
                continue
            records = [row.runs[0].records[i] for i in sorted(common)]
            right = sum(bool(r["correct"]) for r in records)
            lines.append(f"| {dataset_label(dataset, split)} | {student} | {label} | {len(records)} | "
                         f"{_percent_ci(right, len(records))} | {_module_quality(system, records)} |")
    if not lines:
        return []
    return ["## Where the errors come from", "",
            "The same fine-tuned Reasoner given the Analyzer's subquestions or the gold ones, and the "
            "Informant's knowledge or the gold facts, on the same held-out questions. Analyzer quality: "
            "content-word F1 of its subquestions against the gold decomposition. Informant quality: "
            "token F1 of its knowledge against the gold facts of each gold subquestion that has facts.", "",
            "| dataset | student | inputs of the Reasoner | n | accuracy (95% CI) | module quality |",
            "|---|---|---|---|---|---|", *lines, ""]


def _module_quality(system: str, records: list[dict]) -> str:
    if system == "tmd":
        scores = [analyzer_overlap(r) for r in records
                  if r.get("question", {}).get("extra", {}).get("decomposition")]
        none = sum(not r.get("subquestions") for r in records)
        return (f"Analyzer F1 {statistics.fmean(scores):.2f} ({none} of {len(records)} "
                f"with no subquestions)" if scores else "-")
    if system == "tmd-gold-subq":
        scores = [f for r in records for f in informant_f1s(r)]
        return f"Informant F1 {statistics.fmean(scores):.2f} over {len(scores)} subquestions" if scores else "-"
    return "-"


def analyzer_overlap(record: dict) -> float:
    gold = [re.sub(r"#\d+", " ", str(g)) for g in record["question"]["extra"]["decomposition"]]
    return subquestion_overlap(record.get("subquestions", []), gold)


def informant_f1s(record: dict) -> list[float]:
    q = record.get("question", {})
    gold = gold_knowledge(Question(str(q.get("id", "")), str(q.get("question", "")), q.get("options", {}),
                                   q.get("answer"), q.get("extra", {})))
    if gold is None:
        return []
    return [token_f1(mine, theirs) for mine, theirs in zip(record.get("knowledge", []), gold[1]) if theirs]


# --- does the generated reasoning help? ---------------------------------------------------------

def reasoning_worth_table(rows: list[Row]) -> list[str]:
    """Each reasoning system's answer after its reasoning against the same module's answer read
    right after its prompt (raw.option_probs_before_reasoning), on the questions that have both."""
    lines = []
    for row in sorted(rows, key=lambda r: (r.config["dataset"], r.config["system"], student_label(r.config))):
        pairs = [(r, probs) for r in row.runs[0].records.values()
                 if r.get("answer_source") and (probs := _probs_before_reasoning(r))]
        if not pairs:
            continue
        records = [r for r, _ in pairs]
        before = [max(probs, key=probs.get) for _, probs in pairs]
        after_right = sum(bool(r["correct"]) for r in records)
        before_right = sum(letter == r["gold"] for letter, r in zip(before, records))
        changed = sum(letter != r["answer"] for letter, r in zip(before, records))
        c = row.config
        lines.append(f"| {c['system'].upper()} | {c['dataset']} | {student_label(c)} | {tuned_label(c)} | "
                     f"{len(records)} | {_percent_ci(after_right, len(records))} | "
                     f"{_percent_ci(before_right, len(records))} | {100 * changed / len(records):.0f}% |")
    if not lines:
        return []
    return ["## Does the generated reasoning help?", "",
            "The answer after the module's own reasoning (the headline) against the same module's answer "
            "read right after its prompt, before it reasons (for TMD: after the subquestions and "
            "knowledge), on the same questions.", "",
            "| system | dataset | student | fine-tuned | n | after reasoning | before reasoning | answers changed |",
            "|---|---|---|---|---|---|---|---|", *lines, ""]


def _probs_before_reasoning(record: dict) -> dict | None:
    """The recorded probabilities, or None where a record has none (or a hand-edited, broken one)."""
    raw = record.get("raw")
    probs = raw.get("option_probs_before_reasoning") if isinstance(raw, dict) else None
    if not isinstance(probs, dict) or not probs:
        return None
    return probs if all(isinstance(v, (int, float)) for v in probs.values()) else None


def _percent_ci(right: int, n: int) -> str:
    low, high = wilson_interval(right, n)
    return f"{100 * right / n:.1f} ({100 * low:.0f}-{100 * high:.0f})"


# --- TMD against DRD on the same questions ----------------------------------------------------

def tmd_vs_drd_table(rows: list[Row]) -> list[str]:
    """TMD and DRD of one student (bundle and quant) on the questions both answered: the paper's claim
    is TMD >= DRD, and two accuracies with overlapping intervals cannot say whether one is ahead."""
    pairs: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for row in rows:
        c = row.config
        if c["system"] in ("tmd", "drd"):
            pairs[(c["dataset"], c["split"], c["teacher"], student_label(c))][c["system"]] = row
    lines = []
    for (dataset, split, _, student), pair in sorted(pairs.items()):
        if len(pair) < 2:
            continue
        tmd, drd = pair["tmd"].runs[0].records, pair["drd"].runs[0].records
        common = [i for i in tmd if i in drd and tmd[i]["correct"] is not None]
        if not common:
            continue
        tmd_only = sum(bool(tmd[i]["correct"]) and not drd[i]["correct"] for i in common)
        drd_only = sum(bool(drd[i]["correct"]) and not tmd[i]["correct"] for i in common)
        n = len(common)
        tmd_pct = 100 * sum(bool(tmd[i]["correct"]) for i in common) / n
        drd_pct = 100 * sum(bool(drd[i]["correct"]) for i in common) / n
        lines.append(f"| {dataset_label(dataset, split)} | {student} | {n} | {tmd_pct:.1f} | {drd_pct:.1f} | "
                     f"{tmd_pct - drd_pct:+.1f} | {tmd_only} / {drd_only} | {mcnemar_p(tmd_only, drd_only):.2f} |")
    if not lines:
        return []
    return ["## TMD against DRD, question by question", "",
            "The same student's TMD and DRD on the questions both answered. Right by one only: questions "
            "only TMD / only DRD got right; p: exact two-sided McNemar test (binomial on those questions), "
            "the chance of a gap at least this large if neither system were better.", "",
            "| dataset | student | n | TMD | DRD | TMD - DRD | right by one only (TMD / DRD) | p |",
            "|---|---|---|---|---|---|---|---|", *lines, ""]


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: under no difference the b + c discordant questions split 50/50."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
