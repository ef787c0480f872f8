"""Accuracy over a benchmark split, written question by question so a killed run resumes."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..core.errors import TmdError
from ..core.formats import ResultConfig, ResultRecord
from ..core.jsonl import append_jsonl
from ..core.memory import peak_rss_mb
from ..core.prompts import PROMPT_VERSION
from ..core.records import Question
from ..core.registry import file_sha256, gguf_summary
from ..core.results import read_results
from ..runtime.generation import GenerationSettings
from ..runtime.pipeline import Events, ModuleSet, run, system_roles
from ..runtime.pool import ModulePool


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion; sane at 0% and 100% unlike the normal one."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_config(system: str, modules: ModuleSet, settings: GenerationSettings, *, dataset: str,
               split: str, teacher: str = "none (zero-shot base model)", source=None,
               questions: dict | None = None) -> dict:
    """Everything that produced a number, so every reported figure can be labelled with it
    (docs/FORMATS.md section 6). `source`: the bundle the modules come from, which names the
    teacher, the prompt version and each role's training; `questions`: which were asked."""
    roles = system_roles(system)
    config = ResultConfig(system=system, dataset=dataset, split=split, teacher=teacher,
                          models={role: model_label(modules.for_stage(role)) for role in roles},
                          settings=settings.to_dict(), prompt_version=PROMPT_VERSION,
                          tmd_version=__version__, questions=questions)
    if source is not None:
        label_with_bundle(config, source)
    return config.to_json()


def label_with_bundle(config: ResultConfig, source) -> None:
    """Name the teacher, the prompt version and each role's mode (fine-tuned or zero-shot) and
    training from the bundle's manifest."""
    if source.manifest_path is not None:  # a zero-shot "bundle" keeps run_config's own label
        config.teacher = source.info.get("teacher") or "unknown (manifest names none)"
        if isinstance(source.prompt_version, str):  # the prompts its modules were trained on
            config.prompt_version = source.prompt_version
    modules = source.manifest.get("modules", {})
    for role, model in config.models.items():
        model["mode"] = source.roles[role].mode
        training = modules.get(role, {}).get("training") if model["mode"] != "base" else None
        if training:  # how many questions and epochs the student saw
            model["training"] = training


def model_label(model) -> dict:
    label = {"name": model.name, "file": model.path.name, "path": str(model.path),
             "sha256": model.sha256(), **gguf_summary(model.path)}
    adapter = getattr(model, "adapter", None)  # bundle roles in adapter mode: base + LoRA
    if adapter is not None:
        label.update(adapter=adapter.name, adapter_sha256=file_sha256(adapter))
    return label


# Fields that say *what* produced a result; paths, sizes, versions and thread counts only describe it
# (llama.cpp splits a matmul's rows across threads, so the thread count changes speed, not tokens).
IDENTITY_MODEL_FIELDS = ("sha256", "adapter_sha256")
SPEED_ONLY_SETTINGS = ("n_threads", "prefix_cache")


def stated_answer(record: dict) -> str | None:
    """The letter the reasoning itself states; results written before answers were scored hold
    only that one, as `answer`."""
    return record.get("stated_answer") if "answer_source" in record else record["answer"]


def stated_correct(record: dict) -> bool:
    stated = stated_answer(record)
    return stated is not None and stated == record.get("gold")


def config_key(config: dict) -> str:
    identity = {k: v for k, v in config.items() if k not in ("tmd_version", "models", "questions")}
    identity["settings"] = {k: v for k, v in config["settings"].items() if k not in SPEED_ONLY_SETTINGS}
    identity["models"] = {role: {f: m[f] for f in IDENTITY_MODEL_FIELDS if f in m}
                          for role, m in config["models"].items()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class EvalSummary:
    """Accuracy over the scored questions; questions without a gold answer are counted as unscored,
    never as wrong."""
    config: dict
    n: int                      # scored questions (those with a gold answer)
    correct: int
    unparsed: int               # no stated answer (the headline answer is scored, so never missing)
    stated_correct: int
    correct_norm: int | None    # mc: length-normalized choice
    seconds_per_question: float
    peak_rss_mb: float
    results_path: str
    unscored: int = 0           # answered, but the data gives no gold answer to score against

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict:
        low, high = wilson_interval(self.correct, self.n)
        return {"config": self.config, "n": self.n, "correct": self.correct,
                "accuracy": round(self.accuracy, 4), "ci95": [round(low, 4), round(high, 4)],
                "stated_accuracy": round(self.stated_correct / self.n, 4) if self.n else 0.0,
                "stated_share": round((self.n - self.unparsed) / self.n, 4) if self.n else 0.0,
                **({"accuracy_norm": round(self.correct_norm / self.n, 4) if self.n else 0.0}
                   if self.correct_norm is not None else {}),
                "unparsed": self.unparsed, "unscored": self.unscored,
                "seconds_per_question": round(self.seconds_per_question, 2),
                "peak_rss_mb": round(self.peak_rss_mb, 1), "results": self.results_path}


def evaluate(questions: list[Question], system: str, modules: ModuleSet, settings: GenerationSettings,
             config: dict, out: Path, *, batch_size: int = 1, on_question=None,
             events: Events | None = None, pool: ModulePool | None = None) -> EvalSummary:
    """Run the questions not yet in `out` for this config, appending each result as it finishes."""
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise TmdError(f"question id {twice!r} appears more than once; each question needs its own id")
    key = config_key(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {r["id"]: r for _, r in read_results(out, repair=True) if config_key(r["config"]) == key}
    todo = [q for q in questions if q.id not in done]
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        started = time.perf_counter()
        traces = run(system, batch, modules, settings, events, pool=pool)
        wall = (time.perf_counter() - started) / len(batch)
        for trace in traces:
            record = ResultRecord(config, trace.to_dict(), key, round(wall, 3)).to_json()
            append_jsonl(out, record)
            done[trace.question.id] = record
            if on_question:
                on_question(trace)
    return summarize([done[q.id] for q in questions if q.id in done], config, out)


def summarize(records: list[dict], config: dict, out: Path) -> EvalSummary:
    answered = records
    peak = max((s["peak_rss_mb"] for r in answered for s in r["stages"].values()), default=peak_rss_mb())
    seconds = sum(r.get("wall_seconds", 0.0) for r in answered) / len(answered) if answered else 0.0
    records = [r for r in answered if r["correct"] is not None]  # scored: the question has a gold answer
    n = len(records)
    norm = [r for r in records if "answer_norm" in r]
    return EvalSummary(config=config, n=n, correct=sum(1 for r in records if r["correct"] is True),
                       unparsed=sum(1 for r in records if stated_answer(r) is None),
                       stated_correct=sum(map(stated_correct, records)),
                       correct_norm=sum(r["answer_norm"] == r["gold"] for r in norm) if norm else None,
                       seconds_per_question=seconds, peak_rss_mb=peak, results_path=str(out),
                       unscored=len(answered) - n)
