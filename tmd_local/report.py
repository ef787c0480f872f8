"""`tmd report`: Markdown tables and plots from evaluation results, every figure labelled.

Inference FLOPs are estimated as 2 x parameters x tokens processed (prompt + generated), summed over
the stages of a question: the usual forward-pass cost of a dense decoder, ignoring attention's
context-length term (small at these lengths) and the saving of the KV cache.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .bundle import QuantChoice
from .evaluate import SPEED_ONLY_SETTINGS, config_key, stated_answer, stated_correct, wilson_interval
from .gold import gold_knowledge, subquestion_overlap, token_f1
from .results import read_results
from .records import Question


@dataclass
class ConfigResult:
    """All questions answered under one configuration (one seed)."""
    key: str
    config: dict
    records: dict[str, dict] = field(default_factory=dict)  # question id -> result line (scored)
    unscored: dict[str, dict] = field(default_factory=dict)  # answered, but no gold answer to score

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def accuracy(self) -> float:
        return sum(bool(r["correct"]) for r in self.records.values()) / self.n

    def mean(self, value) -> float:
        return statistics.fmean(value(r) for r in self.records.values())

    def flops_per_question(self) -> float:
        return self.mean(lambda r: sum(2 * self._params(stage) * (s["prompt_tokens"] + s["completion_tokens"])
                                       for stage, s in r["stages"].items()))

    def _params(self, stage: str) -> int:
        return self.config["models"].get(stage, {}).get("params", 0)

    def peak_rss_mb(self) -> float:
        return max(s["peak_rss_mb"] for r in self.records.values() for s in r["stages"].values())

    def seconds_per_question(self) -> float:
        return self.mean(lambda r: r.get("wall_seconds", 0.0))

    def stated_accuracy(self) -> float:
        return sum(map(stated_correct, self.records.values())) / self.n

    def stated_share(self) -> float:
        return sum(stated_answer(r) is not None for r in self.records.values()) / self.n

    def norm_accuracy(self) -> float | None:
        """The mc systems' length-normalized accuracy (lm-evaluation-harness acc_norm); None for others."""
        norm = [r for r in self.records.values() if "answer_norm" in r]
        return sum(r["answer_norm"] == r["gold"] for r in norm) / len(norm) if norm else None

    def generation_tokens_per_second(self) -> float:
        """Generated tokens over generation seconds, all stages together (load time excluded)."""
        stages = [s for r in self.records.values() for s in r["stages"].values()]
        seconds = sum(s.get("seconds", 0.0) for s in stages)
        return sum(s.get("completion_tokens", 0) for s in stages) / seconds if seconds else 0.0


def load_results(paths: list[Path]) -> list[ConfigResult]:
    """Every line validated (tmd_local.results); a question without a gold answer is kept apart as
    unscored, so it never counts as a wrong answer."""
    by_key: dict[str, ConfigResult] = {}
    for path in paths:
        for _, record in read_results(path):
            key = config_key(record["config"])  # recomputed: files written before a key change still group
            result = by_key.setdefault(key, ConfigResult(key, record["config"]))
            scored = record["correct"] is not None
            (result.records if scored else result.unscored)[record["id"]] = record
            (result.unscored if scored else result.records).pop(record["id"], None)  # the later line wins
    return list(by_key.values())


def student_label(config: dict) -> str:
    """'smollm2-135m-instruct q4_1', 'sqa50 f16,reasoner=q4_k_m' (a bundle's modules), else each file."""
    sources = {m["name"].split("/")[0] for m in config["models"].values()}
    if len(sources) == 1:
        return f"{sources.pop()} {quant_mix(config)}"
    return " + ".join(sorted({f"{m['name']} {m.get('file_type', '?')}" for m in config["models"].values()}))


def tuned_label(config: dict) -> str:
    """Which roles are fine-tuned (the paper's Table 3 ablation); zero-shot roles have no mode."""
    tuned = [role for role, m in config["models"].items() if m.get("mode") in ("merged", "adapter")]
    return ", ".join(tuned) if tuned else "none (zero-shot)"


def training_of(config: dict) -> list[dict]:
    """The training records (questions, examples, steps, epochs) of the fine-tuned roles."""
    return [m["training"] for m in config["models"].values()
            if m.get("mode") in ("merged", "adapter") and m.get("training")]


def training_label(config: dict) -> str:
    """'analyzer, informant, reasoner (1410-1523 q, 1 ep, lr 0.001)': what was fine-tuned, on how much."""
    tuned, trained = tuned_label(config), training_of(config)
    if not trained:
        return tuned
    questions = sorted({t["questions"] for t in trained})
    q = f"{questions[0]}" if len(questions) == 1 else f"{questions[0]}-{questions[-1]}"
    lr = learning_rates(config)
    return f"{tuned} ({q} q, {epochs_label(config)} ep{f', lr {lr}' if lr else ''})"


def epochs_label(config: dict) -> str:
    return "/".join(f"{e:g}" for e in sorted({round(t["epochs"], 2) for t in training_of(config)}))


def learning_rates(config: dict) -> str:
    """'0.001', or '' for results of adapters whose training record predates the learning rate."""
    return "/".join(f"{lr:g}" for lr in sorted({t["lr"] for t in training_of(config) if "lr" in t}))


def training_questions(config: dict) -> int | None:
    """The x of a learning curve: questions the answering module (reasoner or drd) was trained on."""
    for role in ("reasoner", "drd"):
        m = config["models"].get(role, {})
        if m.get("mode") in ("merged", "adapter") and m.get("training"):
            return m["training"]["questions"]
    return None


def majority_rate(records: list[dict]) -> tuple[str, float]:
    """The most common gold letter among these questions and its share: the majority-class baseline."""
    golds = [r["gold"] for r in records if r.get("gold") is not None]
    if not golds:
        return "-", 0.0
    letter = max(sorted(set(golds)), key=golds.count)
    return letter, golds.count(letter) / len(golds)


def seed_group_key(config: dict) -> tuple:
    settings = {k: v for k, v in config["settings"].items() if k not in ("seed", *SPEED_ONLY_SETTINGS)}
    models = tuple(sorted((role, m["sha256"]) for role, m in config["models"].items()))
    return (config["system"], config["dataset"], config["split"], config["teacher"], models,
            repr(sorted(settings.items())))


@dataclass
class Row:
    """Seeds of one configuration folded together: mean and std of accuracy across seeds."""
    runs: list[ConfigResult]

    @property
    def config(self) -> dict:
        return self.runs[0].config

    @property
    def n(self) -> int:
        return min(r.n for r in self.runs)

    def accuracy(self) -> tuple[float, float]:
        values = [r.accuracy for r in self.runs]
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    def ci95(self) -> tuple[float, float]:
        correct = sum(sum(bool(x["correct"]) for x in r.records.values()) for r in self.runs)
        return wilson_interval(correct, sum(r.n for r in self.runs))

    def cell(self) -> str:
        mean, std = self.accuracy()
        low, high = self.ci95()
        spread = f" ± {100 * std:.1f}" if len(self.runs) > 1 else ""
        return f"{100 * mean:.1f}{spread} (n={self.n}, CI {100 * low:.0f}-{100 * high:.0f})"


def fold_seeds(results: list[ConfigResult]) -> list[Row]:
    """Rows of scored results (a configuration with no scored question has no accuracy to show)."""
    groups: dict[tuple, list[ConfigResult]] = defaultdict(list)
    for result in results:
        if result.n == 0:
            continue
        groups[seed_group_key(result.config)].append(result)
    return [Row(runs) for runs in groups.values()]


def render_markdown(rows: list[Row], sources: list[Path], plots: list[Path], unscored: int = 0,
                    panels: Sequence[CurvePanel] = ()) -> str:
    lines = ["# tmd evaluation report", "",
             f"From {', '.join(str(p) for p in sources)}. Accuracy in %, mean ± std over seeds where "
             "several were run, with the 95% Wilson interval over all answers. The answer is the option "
             "the module finds most probable after its reasoning (mc: option log-likelihood); 'stated' "
             "figures count only answers the reasoning states itself.", ""]
    if unscored:
        lines += [f"Not scored: {unscored} answers to questions whose data gives no gold answer "
                  "(they count in no accuracy).", ""]
    lines += majority_lines(rows) + [""]
    lines += _accuracy_table(rows) + [""] + _detail_table(rows) + [""] + _quant_table(rows) + [""]
    lines += _sensitivity_table(rows) + _learning_curve_table(panels) + _error_source_table(rows)
    lines += _tmd_vs_drd_table(rows) + _reasoning_worth_table(rows)
    for plot in plots:
        lines.append(f"![{plot.stem}]({plot.name})")
    lines += ["", "FLOPs per question = sum over stages of 2 x parameters x (prompt + generated tokens)."]
    return "\n".join(lines) + "\n"


def _accuracy_table(rows: list[Row]) -> list[str]:
    datasets = sorted({r.config["dataset"] for r in rows})
    systems: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for row in rows:
        c = row.config
        systems[(c["system"].upper(), student_label(c), c["teacher"], tuned_label(c))][c["dataset"]] = row
    out = ["## Accuracy per system and dataset (Tables 1-3 analog)", "",
           "| system | student (quant) | teacher | fine-tuned modules | " + " | ".join(datasets) + " |",
           "|---" * (4 + len(datasets)) + "|"]
    for (system, student, teacher, tuned), cells in sorted(systems.items()):
        values = [cells[d].cell() if d in cells else "-" for d in datasets]
        out.append(f"| {system} | {student} | {teacher} | {tuned} | " + " | ".join(values) + " |")
    return out


def _detail_table(rows: list[Row]) -> list[str]:
    out = ["## Cost per question", "",
           "| system | dataset | split | student | seeds | n | no stated answer | s/question | peak RSS MB | GFLOPs/question |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r.config["dataset"], r.config["system"])):
        c, run = row.config, row.runs[0]
        unparsed = sum(stated_answer(r) is None for r in run.records.values())
        out.append(f"| {c['system'].upper()} | {c['dataset']} | {c['split']} | {student_label(c)} | "
                   f"{len(row.runs)} | {row.n} | {unparsed} | {run.seconds_per_question():.1f} | "
                   f"{run.peak_rss_mb():.0f} | {run.flops_per_question() / 1e9:.1f} |")
    return out


def quant_mix(config: dict) -> str:
    """Each role's quantization as `--quant` text: 'f16', or 'f16,reasoner=q4_k_m' for a mix."""
    return QuantChoice.of({role: m.get("file_type") or "?" for role, m in config["models"].items()}).text


def _families(rows: list[Row]) -> dict[tuple, dict[str, Row]]:
    """Rows that differ only in quantization: same system, data, teacher and trained modules."""
    families: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for row in rows:
        c = row.config
        names = tuple(sorted({m["name"] for m in c["models"].values()}))
        families[(c["system"], c["dataset"], c["split"], c["teacher"], names)][quant_mix(c)] = row
    return families


def _quant_table(rows: list[Row]) -> list[str]:
    """Accuracy, agreement with f16, size and cost of each quantization of the same models."""
    out = ["## Quantization", "",
           "Answer agreement: share of questions where the answer (or the lack of one) equals the f16 run's.", "",
           "| system | dataset | student | quant | accuracy | agreement with f16 | file MB per module | bits/weight | "
           "peak RSS MB | s/question | generated tok/s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (system, dataset, _, _, names), by_quant in sorted(_families(rows).items()):
        student = ", ".join(sorted({name.split("/")[0] for name in names}))
        reference = by_quant.get("f16")
        for quant, row in sorted(by_quant.items(), key=lambda item: (item[0].count("="), item[0])):
            models = list(row.config["models"].values())
            agree = _agreement(reference, row) if reference else None
            sizes = _per_module(f"{m.get('size_bytes', 0) / 1e6:.0f}" for m in models)
            bits = _per_module(f"{m.get('bits_per_weight', 0):.2f}" for m in models)
            out.append(f"| {system.upper()} | {dataset} | {student} | {quant} | {row.cell()} | "
                       f"{'-' if agree is None else f'{100 * agree:.1f}%'} | {sizes} | {bits} | "
                       f"{row.runs[0].peak_rss_mb():.0f} | {row.runs[0].seconds_per_question():.1f} | "
                       f"{row.runs[0].generation_tokens_per_second():.1f} |")
    return out


def _sensitivity_table(rows: list[Row]) -> list[str]:
    """One module quantized while the others keep the reference quant: which module is fragile."""
    lines = []
    for (system, dataset, *_), by_quant in sorted(_families(rows).items()):
        for mix, row in sorted(by_quant.items()):
            choice = QuantChoice.parse(mix)
            reference = by_quant.get(choice.default)
            if len(choice.per_role) != 1 or reference is None:
                continue
            [(role, quant)] = choice.per_role.items()
            default = choice.default
            common = set(reference.runs[0].records) & set(row.runs[0].records)
            if not common:
                continue
            delta = 100 * (_accuracy_on(row, common) - _accuracy_on(reference, common))
            agree = _agreement(reference, row)
            lines.append(f"| {system.upper()} | {dataset} | {role} | {default} -> {quant} | {row.cell()} | "
                         f"{delta:+.1f} (n={len(common)}) | {100 * agree:.1f}% | "
                         f"{row.runs[0].peak_rss_mb():.0f} |")
    if not lines:
        return []
    return ["## Per-module quantization sensitivity", "",
            "One module quantized, the others as in the reference run (all modules in the first quant); "
            "change in accuracy points and answer agreement with the reference, on the same questions.", "",
            "| system | dataset | module | quant | accuracy | change vs reference | agreement with reference | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|", *lines, ""]


def _per_module(values) -> str:
    values = list(values)
    return values[0] if len(set(values)) == 1 else "/".join(values)


def _accuracy_on(row: Row, ids: set[str]) -> float:
    records = row.runs[0].records
    return sum(bool(records[i]["correct"]) for i in ids) / len(ids)


def _agreement(reference: Row, row: Row) -> float | None:
    ref, other = reference.runs[0].records, row.runs[0].records
    common = set(ref) & set(other)
    if not common:
        return None
    return sum(ref[i]["answer"] == other[i]["answer"] for i in common) / len(common)


# --- where TMD's errors come from --------------------------------------------------------------

ERROR_SOURCE_SYSTEMS = (("tmd", "TMD: Analyzer -> Informant -> Reasoner"),
                        ("tmd-gold-subq", "gold subquestions -> Informant -> Reasoner"),
                        ("tmd-gold-facts", "gold subquestions + gold facts -> Reasoner (perfect knowledge)"))


def dataset_label(dataset: str, split: str) -> str:
    """'strategyqa' for test, 'strategyqa (train)' for held-out train questions used for choices."""
    return dataset if split == "test" else f"{dataset} ({split})"


def _reasoner_family(config: dict) -> tuple:
    """Rows whose Reasoner is the same model on the same data: TMD and its gold-input variants."""
    reasoner = config["models"].get("reasoner", {})
    return (config["dataset"], config["split"], config["teacher"], reasoner.get("sha256"),
            reasoner.get("adapter_sha256"))


def _error_source_table(rows: list[Row]) -> list[str]:
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

def _reasoning_worth_table(rows: list[Row]) -> list[str]:
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

def _tmd_vs_drd_table(rows: list[Row]) -> list[str]:
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


# --- learning curve ---------------------------------------------------------------------------

@dataclass
class CurvePanel:
    """One dataset's learning curve: each line (system, quant, teacher, epochs, lr) with its points
    (training questions, accuracy %), the zero-shot and mc levels and the majority class (letter,
    accuracy %), all on the same test questions."""
    dataset: str
    common: set[str]
    lines: dict[tuple, list[tuple[int, float]]]
    levels: list[tuple[str, float]]
    majority: tuple[str, float]


def learning_curve(rows: list[Row]) -> list[CurvePanel]:
    """Fine-tuned TMD and DRD (every module fine-tuned) trained on at least two amounts of data. A
    configuration seen at one size only (another learning rate, quant or number of epochs) is no
    curve: it never decides which questions the points share. One that differs from a curve only in
    its epochs joins as a lone point when it answered all of them (the paper's 3 epochs at the
    largest size, beside the 1-epoch curve); the Quantization section has the other quants.
    Test split only: held-out train questions (the rows that chose the learning rate) are no point."""
    rows = [r for r in rows if r.config["split"] == "test"]
    candidates = [r for r in rows if r.config["system"] in ("tmd", "drd") and training_questions(r.config)
                  and "zero-shot" not in tuned_label(r.config)
                  and set(tuned_label(r.config).split(", ")) >= set(r.config["models"])]
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in candidates:
        groups[(row.config["dataset"], *_line_key(row.config))].append(row)
    curve = [r for g in groups.values() if len({training_questions(r.config) for r in g}) >= 2 for r in g]
    curve_keys = {_but_epochs(r) for r in curve}
    lone = [r for r in candidates if r not in curve and _but_epochs(r) in curve_keys]
    panels = []
    for dataset in sorted({r.config["dataset"] for r in curve}):
        points = [r for r in curve if r.config["dataset"] == dataset]
        common = set.intersection(*(set(r.runs[0].records) for r in points))
        if not common:
            continue  # no question every point answered: nothing to compare
        lines: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
        covering = [r for r in lone if r.config["dataset"] == dataset and common <= set(r.runs[0].records)]
        for row in points + covering:
            lines[_line_key(row.config)].append((training_questions(row.config), _accuracy_on_ids(row, common)))
        levels = _levels([r for r in rows if r.config["dataset"] == dataset and r not in candidates], common)
        letter, rate = majority_rate([points[0].runs[0].records[i] for i in common])
        panels.append(CurvePanel(dataset, common, {k: sorted(v) for k, v in sorted(lines.items())}, levels,
                                 (letter, 100 * rate)))
    return panels


def _but_epochs(row: Row) -> tuple:
    system, quant, teacher, _epochs, lr = _line_key(row.config)
    return row.config["dataset"], system, quant, teacher, lr


def _line_key(config: dict) -> tuple:
    return config["system"].upper(), quant_mix(config), config["teacher"], epochs_label(config), learning_rates(config)


def _line_label(key: tuple) -> str:
    system, quant, teacher, epochs, lr = key
    return f"{system} {quant}, {teacher}, {epochs} ep" + (f", lr {lr}" if lr else "")


def _accuracy_on_ids(row: Row, ids: set[str]) -> float | None:
    records = row.runs[0].records
    if not ids or not ids <= set(records):
        return None
    return 100 * sum(bool(records[i]["correct"]) for i in ids) / len(ids)


def _levels(others: list[Row], common: set[str]) -> list[tuple[str, float]]:
    """Zero-shot systems and mc on the same questions."""
    levels = []
    for row in others:
        if training_of(row.config) or row.config["system"] not in ("tmd", "drd", "mc"):
            continue
        y = _accuracy_on_ids(row, common)
        if y is not None:
            levels.append((f"{row.config['system'].upper()} zero-shot {student_label(row.config)}", y))
    return levels


def plot_learning_curve(panels: list[CurvePanel], out_dir: Path) -> Path | None:
    """Accuracy vs training questions, one panel per dataset, levels as horizontal lines."""
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        n = len(panel.common)
        for key, xy in panel.lines.items():
            # the 95% Wilson interval of each point: at a few hundred questions it spans +-7 points
            bounds = [wilson_interval(round(y * n / 100), n) for _, y in xy]
            below = [y - 100 * low for (_, y), (low, _) in zip(xy, bounds)]
            above = [100 * high - y for (_, y), (_, high) in zip(xy, bounds)]
            # a lone point (another epoch count at one size) is drawn a little to the right of the
            # curve's point at that size, so that their intervals do not hide each other
            lone = len(xy) == 1
            ax.errorbar([x * (1.08 if lone else 1) for x, _ in xy], [y for _, y in xy], yerr=[below, above],
                        capsize=3, fmt="o-" if key[0] == "TMD" else "s--",
                        label=_line_label(key) + (" (95% CI; drawn beside its size)" if lone else " (95% CI)"))
        styles = iter(["-.", ":", (0, (5, 1)), (0, (1, 2)), (0, (3, 1, 1, 1))])
        for label, y in panel.levels:
            ax.axhline(y, linestyle=next(styles, ":"), color="grey", label=f"{label}: {y:.1f}")
        letter, rate = panel.majority
        ax.axhline(rate, color="red", linewidth=1, label=f"majority class ({letter}): {rate:.1f}")
        ax.set_xscale("log")
        ax.set_title(f"{panel.dataset}: {len(panel.common)} test questions")
        ax.set_xlabel("training questions (teacher data)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "learning_curve.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _learning_curve_table(panels: Sequence[CurvePanel]) -> list[str]:
    """The plot's numbers: a row per line, a column per amount of training data."""
    out = []
    for panel in panels:
        columns = size_columns({x for xy in panel.lines.values() for x, _ in xy})
        out += [f"## Learning curve ({panel.dataset}, the same {len(panel.common)} test questions)", "",
                "Accuracy (%) by questions the answering module (Reasoner or DRD) was trained on.", "",
                "| system | " + " | ".join(_size_label(c) for c in columns) + " |",
                "|---" * (1 + len(columns)) + "|"]
        for key, xy in panel.lines.items():
            cells = [[y for x, y in xy if x in column] for column in columns]
            out.append(f"| {_line_label(key)} | "
                       + " | ".join("/".join(f"{y:.1f}" for y in c) if c else "-" for c in cells) + " |")
        letter, rate = panel.majority
        out += [""] + [f"- {label}: {y:.1f}" for label, y in panel.levels]
        out += [f"- majority class ({letter}): {rate:.1f}", ""]
    return out


def size_columns(sizes: set[int], tolerance: float = 0.02) -> list[list[int]]:
    """Training sizes within 2% of each other share a column: one teacher run gives DRD and the Reasoner
    a question or two apart (the teacher's filter drops different records, then 5% are held out)."""
    columns: list[list[int]] = []
    for n in sorted(sizes):
        if columns and n <= columns[-1][0] * (1 + tolerance):
            columns[-1].append(n)
        else:
            columns.append([n])
    return columns


def _size_label(column: list[int]) -> str:
    return f"{column[0]} q" if len(column) == 1 else f"{column[0]}-{column[-1]} q"


FIGURE_AXES = (("accuracy_vs_flops", "GFLOPs per question", lambda r: r.runs[0].flops_per_question() / 1e9),
               ("accuracy_vs_memory", "peak RSS (MiB)", lambda r: r.runs[0].peak_rss_mb()))


def plot(rows: list[Row], out_dir: Path) -> list[Path]:
    """Accuracy vs inference FLOPs and vs peak memory (the paper's Figure 2): one panel per dataset,
    one colour per student (bundle + quant), circles TMD, squares DRD, dotted lines join a pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.config["dataset"] for r in rows})
    students = sorted({student_label(r.config) for r in rows})
    colour = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(students)}
    made = []
    for name, xlabel, x_of in FIGURE_AXES:
        fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets) + 2.6, 4), squeeze=False)
        for ax, dataset in zip(axes[0], datasets):
            _plot_panel(ax, [r for r in rows if r.config["dataset"] == dataset], x_of, colour)
            ax.set_title(dataset)
            ax.set_xlabel(xlabel)
        axes[0][0].set_ylabel("accuracy (%)")
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour[s], label=s) for s in students]
        handles += [plt.Line2D([], [], marker=m, linestyle="", color="black", markerfacecolor="none", label=label)
                    for m, label in (("o", "TMD"), ("s", "DRD"), ("^", "other (mc, tmd-gold-*)"))]
        fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        made.append(path)
    return made


SYSTEM_MARKERS = {"tmd": "o", "drd": "s"}


def _plot_panel(ax, rows: list[Row], x_of, colour: dict) -> None:
    pairs: dict[tuple, dict[str, tuple]] = defaultdict(dict)
    for row in rows:
        c = row.config
        point = (x_of(row), 100 * row.accuracy()[0])
        ax.scatter(*point, marker=SYSTEM_MARKERS.get(c["system"], "^"), color=colour[student_label(c)])
        pairs[(c["teacher"], student_label(c))][c["system"]] = point
    for systems in pairs.values():
        if {"tmd", "drd"} <= set(systems):
            (x1, y1), (x2, y2) = systems["tmd"], systems["drd"]
            ax.plot([x1, x2], [y1, y2], linestyle=":", color="grey")


README_BEGIN = "<!-- tmd report: begin -->"
README_END = "<!-- tmd report: end -->"


def readme_table(rows: list[Row], report_path: Path, sources: list[Path]) -> list[str]:
    """The headline figures for the README: every configuration, labelled with what produced it."""
    out = [f"<!-- generated by `tmd report {' '.join(map(str, sources))} --out {report_path} --readme`; "
           "edits here are overwritten -->",
           f"Full report with plots: {report_path}. Accuracy in % with the 95% Wilson interval: the option "
           "the module finds most probable after its reasoning (mc: by option log-likelihood). Stated: "
           "accuracy counting only answers the reasoning itself states, and the share of questions "
           "where it states one. Seconds and memory measured on this machine.", "",
           *majority_lines(rows), "",
           "| dataset | system | student (quant) | teacher | fine-tuned (train questions, epochs) | n | "
           "accuracy (95% CI) | stated accuracy | stated share | s/question | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = lambda r: (r.config["dataset"], r.config["split"] != "test", tuned_label(r.config) == "none (zero-shot)",
                       r.config["system"], student_label(r.config))
    for row in sorted(rows, key=order):
        c, run = row.config, row.runs[0]
        mean, _ = row.accuracy()
        low, high = row.ci95()
        stated = (f"{100 * run.stated_accuracy():.1f}", f"{100 * run.stated_share():.0f}%")
        norm = run.norm_accuracy()  # only the mc systems score options without a reasoning
        if norm is not None:
            stated = (f"- (acc_norm {100 * norm:.1f})", "-")
        dataset = dataset_label(c["dataset"], c["split"])
        out.append(f"| {dataset} | {c['system'].upper()} | {student_label(c)} | {c['teacher']} | "
                   f"{training_label(c)} | {row.n} | {100 * mean:.1f} ({100 * low:.0f}-{100 * high:.0f}) | "
                   f"{stated[0]} | {stated[1]} | {run.seconds_per_question():.1f} | {run.peak_rss_mb():.0f} |")
    return out


def majority_lines(rows: list[Row]) -> list[str]:
    """Per dataset and question count, the majority-class rate every system must beat."""
    seen: dict[tuple, tuple[str, float]] = {}
    for row in rows:
        records = list(row.runs[0].records.values())
        seen[(row.config["dataset"], row.config["split"], len(records))] = majority_rate(records)
    return [f"Majority class on {dataset} {split} ({n} questions): always answering {letter} scores "
            f"{100 * rate:.1f}%." for (dataset, split, n), (letter, rate) in sorted(seen.items())]


def update_readme(readme: Path, rows: list[Row], report_path: Path, sources: list[Path]) -> None:
    """Replace the README's marked section with the figures just computed (nothing edited by hand)."""
    from .errors import TmdError
    from .jsonl import write_text_atomic

    text = readme.read_text(encoding="utf-8")
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise TmdError(f"{readme}: expected one pair of markers {README_BEGIN!r} ... {README_END!r}")
    head, rest = text.split(README_BEGIN)
    _, tail = rest.split(README_END)
    write_text_atomic(readme, head + README_BEGIN + "\n" + "\n".join(readme_table(rows, report_path, sources)) + "\n"
                      + README_END + tail)


def write_report(result_paths: list[Path], out: Path, readme: Path | None = None) -> Path:
    from .jsonl import write_text_atomic

    results = load_results(result_paths)
    rows = fold_seeds(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = plot(rows, out.parent) if rows else []
    panels = learning_curve(rows)
    curve = plot_learning_curve(panels, out.parent)
    plots += [curve] if curve else []
    unscored = sum(len(r.unscored) for r in results)
    write_text_atomic(out, render_markdown(rows, result_paths, plots, unscored, panels))
    if readme is not None:
        update_readme(readme, rows, out, result_paths)
    return out
