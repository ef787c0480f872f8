"""Evaluation results read into rows: each configuration's answers (ConfigResult), its seeds folded
into one Row, and the labels the tables and plots give a configuration.

Inference FLOPs are estimated as 2 x parameters x tokens processed (prompt + generated), summed over
the stages of a question: the usual forward-pass cost of a dense decoder, ignoring attention's
context-length term (small at these lengths) and the saving of the KV cache.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..core.results import read_results
from ..runtime.bundle import QuantChoice
from .evaluate import (
    SPEED_ONLY_SETTINGS,
    config_key,
    stated_answer,
    stated_correct,
    wilson_interval,
)


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
    """Every line validated (tmd_local.core.results); a question without a gold answer is kept apart as
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


def quant_mix(config: dict) -> str:
    """Each role's quantization as `--quant` text: 'f16', or 'f16,reasoner=q4_k_m' for a mix."""
    return QuantChoice.of({role: m.get("file_type") or "?" for role, m in config["models"].items()}).text


def dataset_label(dataset: str, split: str) -> str:
    """'strategyqa' for test, 'strategyqa (train)' for held-out train questions used for choices."""
    return dataset if split == "test" else f"{dataset} ({split})"
