"""Benchmark loaders: OpenBookQA, StrategyQA and MedQA-USMLE (4 options) into `Question` records.

Sources, in order: an explicit file, a data directory holding `<dataset>/<split>.jsonl` (the
normalized JSONL in ../shared/data), or a hub dataset when online. Each file may be the normalized
JSONL or the benchmark's original format; the converters below recognise both.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import TmdError
from .records import Question

DATASETS = ("obqa", "strategyqa", "medqa")
SPLITS = ("train", "validation", "test")
# Public hub copies, used only when no local file is found and the hub is reachable.
HUB_IDS = {"obqa": ("allenai/openbookqa", "main"),
           "strategyqa": ("ChilleD/StrategyQA", None),
           "medqa": ("GBaker/MedQA-USMLE-4-options", None)}
YES_NO = {"A": "yes", "B": "no"}


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    skipped: list[str] = field(default_factory=list)  # "file:line: reason"


def default_data_dir() -> Path | None:
    """$TMD_DATA_DIR, else the shared/data folder beside this checkout."""
    env = os.environ.get("TMD_DATA_DIR")
    if env:
        return Path(env)
    beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data"
    return beside_repo if beside_repo.is_dir() else None


def find_local_file(dataset: str, split: str, data_dir: Path | None = None) -> Path | None:
    data_dir = data_dir or default_data_dir()
    if data_dir is None:
        return None
    for name in (f"{split}.jsonl", f"{split}.json"):
        candidate = Path(data_dir) / dataset / name
        if candidate.is_file():
            return candidate
    return None


def load_questions(dataset: str, split: str = "test", *, path: str | Path | None = None,
                   data_dir: str | Path | None = None, strict: bool = False,
                   limit: int | None = None, offset: int = 0, hub: bool = True
                   ) -> tuple[list[Question], LoadReport]:
    """Load one split: its questions offset..offset+limit. strict=True rejects the file at its
    first malformed record."""
    if dataset not in DATASETS:
        raise TmdError(f"dataset '{dataset}': expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise TmdError(f"split '{split}': expected one of {', '.join(SPLITS)}")
    file = Path(path) if path else find_local_file(dataset, split, Path(data_dir) if data_dir else None)
    end = None if limit is None else offset + limit
    if file is not None:
        questions, report = load_file(file, dataset, strict=strict, limit=end)
    elif hub:
        questions, report = _load_hub(dataset, split, strict=strict, limit=end)
    else:
        raise TmdError(f"{dataset}/{split}: no local file (looked in {data_dir or default_data_dir()}); "
                       "pass --data-path or set TMD_DATA_DIR")
    questions = questions[offset:]
    if not questions:
        raise TmdError(f"{report.source}: no usable {dataset} questions"
                       + (f" after the first {offset}" if offset else "")
                       + (f" ({len(report.skipped)} malformed, first: {report.skipped[0]})"
                          if report.skipped else ""))
    return questions, report


def load_file(path: Path, dataset: str, *, strict: bool = False,
              limit: int | None = None) -> tuple[list[Question], LoadReport]:
    if not path.is_file():
        raise TmdError(f"{path}: no such file")
    report = LoadReport(source=str(path))
    questions: list[Question] = []
    for where, raw in _raw_records(path):
        try:
            questions.append(to_question(raw, dataset))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            reason = f"{where}: {_reason(e)}"
            if strict:
                raise TmdError(reason) from None
            report.skipped.append(reason)
            continue
        if limit is not None and len(questions) >= limit:
            break
    report.loaded = len(questions)
    return questions, report


def _reason(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing field {error.args[0]!r}"
    return str(error)


def _raw_records(path: Path) -> Iterable[tuple[str, Any]]:
    """(file:line, record) pairs from JSONL, or from a JSON array (StrategyQA's original file)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.read(1)
        while first and first.isspace():
            first = f.read(1)
        f.seek(0)
        if first == "[":
            try:
                records = json.load(f)
            except json.JSONDecodeError as e:
                raise TmdError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
            for i, record in enumerate(records):
                yield f"{path}[{i}]", record
            return
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                yield f"{path}:{lineno}", _Invalid(f"invalid JSON ({e.msg} at column {e.colno})")


class _Invalid:
    def __init__(self, reason: str):
        self.reason = reason


def to_question(raw: Any, dataset: str) -> Question:
    """One record in any supported shape -> a validated Question."""
    if isinstance(raw, _Invalid):
        raise ValueError(raw.reason)
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    if "options" in raw and isinstance(raw["options"], dict) and "answer_idx" not in raw:
        q = _from_normalized(raw)
    elif dataset == "obqa":
        q = _from_openbookqa(raw)
    elif dataset == "strategyqa":
        q = _from_strategyqa(raw)
    else:
        q = _from_medqa(raw)
    return _validated(q)


def _from_normalized(raw: dict) -> Question:
    return Question(id=str(raw["id"]), question=raw["question"], options=dict(raw["options"]),
                    answer=raw.get("answer"), extra=raw.get("extra") or {})


def _from_openbookqa(raw: dict) -> Question:
    # allenai's original JSONL nests {"question": {"stem", "choices": [...]}}; the hub copy is flat.
    if isinstance(raw.get("question"), dict):
        stem, choices = raw["question"]["stem"], raw["question"]["choices"]
        options = {c["label"]: c["text"] for c in choices}
    else:
        stem, choices = raw["question_stem"], raw["choices"]
        options = dict(zip(choices["label"], choices["text"]))
    return Question(id=str(raw["id"]), question=stem, options=options, answer=raw.get("answerKey"),
                    extra={k: raw[k] for k in ("fact1",) if k in raw})


def _from_strategyqa(raw: dict) -> Question:
    answer = raw.get("answer")
    if answer is not None and not isinstance(answer, bool):
        raise ValueError(f"field 'answer': expected true/false, got {answer!r}")
    extra = {k: raw[k] for k in ("term", "description", "facts", "decomposition", "evidence") if k in raw}
    return Question(id=str(raw["qid"]), question=raw["question"], options=dict(YES_NO),
                    answer=None if answer is None else ("A" if answer else "B"), extra=extra)


def _from_medqa(raw: dict) -> Question:
    options = raw["options"]
    if isinstance(options, list):  # some copies store [{"key": "A", "value": "..."}]
        options = {o["key"]: o["value"] for o in options}
    # The original files carry no ids; a content hash keeps ids stable across runs and machines.
    qid = raw.get("id") or "medqa-" + hashlib.sha1(raw["question"].encode()).hexdigest()[:12]
    return Question(id=str(qid), question=raw["question"], options=dict(options),
                    answer=raw.get("answer_idx"), extra={k: raw[k] for k in ("meta_info",) if k in raw})


def _validated(q: Question) -> Question:
    if not isinstance(q.question, str) or not q.question.strip():
        raise ValueError("field 'question': expected non-empty text")
    if len(q.options) < 2:
        raise ValueError(f"field 'options': expected at least 2 options, got {len(q.options)}")
    for letter, text in q.options.items():
        if not (isinstance(letter, str) and len(letter) == 1 and letter.isupper()):
            raise ValueError(f"field 'options': expected capital letters as keys, got {letter!r}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"field 'options.{letter}': expected non-empty text")
    if q.answer is not None and q.answer not in q.options:
        raise ValueError(f"field 'answer': expected one of {'/'.join(q.options)}, got {q.answer!r}")
    return q


def _load_hub(dataset: str, split: str, *, strict: bool, limit: int | None):
    hub_id, config = HUB_IDS[dataset]
    try:
        import datasets as hf_datasets  # late: heavy, and only needed online

        rows = hf_datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # the hub library raises many types; all mean "not available here"
        raise TmdError(f"{dataset}/{split}: no local file and hub dataset {hub_id} is not reachable "
                       f"({type(e).__name__}); pass --data-path or set TMD_DATA_DIR") from None
    report = LoadReport(source=f"hub:{hub_id}")
    questions = []
    for i, row in enumerate(rows):
        try:
            questions.append(to_question(dict(row), dataset))
        except (ValueError, KeyError, TypeError) as e:
            if strict:
                raise TmdError(f"hub:{hub_id}[{i}]: {_reason(e)}") from None
            report.skipped.append(f"hub:{hub_id}[{i}]: {_reason(e)}")
        if limit is not None and len(questions) >= limit:
            break
    report.loaded = len(questions)
    return questions, report
