"""Benchmark loaders: OpenBookQA, StrategyQA and MedQA-USMLE (4 options) into `Question` records.

Sources, in order: an explicit file, a data directory holding `<dataset>/<split>.jsonl` (the
normalized JSONL in ../shared/data), or a hub dataset when online. Each file may be the normalized
JSONL or the benchmark's original format; the converters below recognise both.
"""

from __future__ import annotations

import hashlib
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import TmdError
from .jsonl import JsonError, parse_json, require_regular_file
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
    duplicates: list[str] = field(default_factory=list)  # "file:line: same record as line N", dropped
    unscored: int = 0  # questions without a gold answer (answered, but not scored)

    def warnings(self) -> list[str]:
        """What the user should hear about the data, one line each (the first example named)."""
        out = []
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} malformed records, first: {self.skipped[0]}")
        if self.duplicates:
            out.append(f"dropped {len(self.duplicates)} repeated records, first: {self.duplicates[0]}")
        if self.unscored:
            out.append(f"{self.unscored} questions have no gold answer: they are answered but not scored")
        return out


def default_data_dir() -> Path | None:
    """$TMD_DATA_DIR, else the shared/data folder beside this checkout."""
    env = os.environ.get("TMD_DATA_DIR")
    if env:
        return Path(env)
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "data"
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
    report.unscored = sum(q.answer is None for q in questions)
    if not questions:
        raise TmdError(f"{report.source}: no usable {dataset} questions"
                       + (f" after the first {offset}" if offset else "")
                       + (f" ({len(report.skipped)} malformed, first: {report.skipped[0]})"
                          if report.skipped else ""))
    return questions, report


def load_file(path: Path, dataset: str, *, strict: bool = False,
              limit: int | None = None) -> tuple[list[Question], LoadReport]:
    path = Path(path)
    require_regular_file(path, "question file")
    report = LoadReport(source=str(path))
    questions: list[Question] = []
    seen = _Seen()
    for where, raw in _raw_records(path):
        try:
            q = to_question(raw, dataset)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            reason = f"{where}: {_reason(e)}"
            if strict:
                raise TmdError(reason) from None
            report.skipped.append(reason)
            continue
        if not seen.first_time(q, where, report):
            continue
        questions.append(q)
        if limit is not None and len(questions) >= limit:
            break
    report.loaded = len(questions)
    report.unscored = sum(q.answer is None for q in questions)
    return questions, report


class _Seen:
    """Question ids met so far: a record repeated word for word is dropped (with a warning); another
    question under an id already used is refused, since results and training sets are keyed by id
    and one of the two would silently be counted twice and the other never."""

    def __init__(self):
        self.by_id: dict[str, tuple[str, Question]] = {}

    def first_time(self, q: Question, where: str, report: LoadReport) -> bool:
        if q.id not in self.by_id:
            self.by_id[q.id] = (where, q)
            return True
        first_where, first = self.by_id[q.id]
        if first.to_dict() == q.to_dict():
            report.duplicates.append(f"{where}: same record as {first_where}")
            return False
        raise TmdError(f"{where}: id {q.id!r} is already used by {first_where} for another question; "
                       "every question needs its own id")


def _reason(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing field {error.args[0]!r}"
    return str(error)


def _raw_records(path: Path) -> Iterable[tuple[str, Any]]:
    """(file:line, record) pairs from JSONL, or from a JSON array (StrategyQA's original file).
    Every line goes through tmd_local.core.jsonl.parse_json; a line it refuses is a malformed record."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TmdError(f"{path}: cannot read ({e.strerror})") from None
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        records = parse_json(data, str(path), whole_file=True)
        for i, record in enumerate(records):
            yield f"{path}[{i}]", record
        return
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", parse_json(line, f"{path}:{lineno}")
        except JsonError as e:
            yield f"{path}:{lineno}", _Invalid(e.problem.replace("not valid JSON", "invalid JSON", 1))


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
    return Question(id=_id(raw, "id"), question=raw["question"], options=dict(raw["options"]),
                    answer=raw.get("answer"), extra=raw.get("extra") or {})


def _id(raw: dict, field: str) -> str:
    """An id is text or a whole number; null, true or a list would all become some text ("None")."""
    value = raw[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ValueError(f"field {field!r}: expected a non-empty text or number, got {value!r}")
    return str(value).strip()


def _from_openbookqa(raw: dict) -> Question:
    # allenai's original JSONL nests {"question": {"stem", "choices": [...]}}; the hub copy is flat.
    if isinstance(raw.get("question"), dict):
        stem, choices = raw["question"]["stem"], raw["question"]["choices"]
        options = {c["label"]: c["text"] for c in choices}
    else:
        stem, choices = raw["question_stem"], raw["choices"]
        options = dict(zip(choices["label"], choices["text"]))
    return Question(id=_id(raw, "id"), question=stem, options=options, answer=raw.get("answerKey"),
                    extra={k: raw[k] for k in ("fact1",) if k in raw})


def _from_strategyqa(raw: dict) -> Question:
    answer = raw.get("answer")
    if answer is not None and not isinstance(answer, bool):
        raise ValueError(f"field 'answer': expected true/false, got {answer!r}")
    extra = {k: raw[k] for k in ("term", "description", "facts", "decomposition", "evidence") if k in raw}
    return Question(id=_id(raw, "qid"), question=raw["question"], options=dict(YES_NO),
                    answer=None if answer is None else ("A" if answer else "B"), extra=extra)


def _from_medqa(raw: dict) -> Question:
    options = raw["options"]
    if isinstance(options, list):  # some copies store [{"key": "A", "value": "..."}]
        options = {o["key"]: o["value"] for o in options}
    # The original files carry no ids; a content hash keeps ids stable across runs and machines.
    if raw.get("id") is not None:
        qid = _id(raw, "id")
    else:
        qid = "medqa-" + hashlib.sha1(str(raw["question"]).encode()).hexdigest()[:12]
    return Question(id=qid, question=raw["question"], options=dict(options),
                    answer=raw.get("answer_idx"), extra={k: raw[k] for k in ("meta_info",) if k in raw})


OPTION_LETTERS = string.ascii_uppercase  # what the prompts, parser and letter tokens know
# Annotations read as lists of texts (a string would be split into one subquestion per character).
TEXT_LISTS = ("decomposition", "facts")


def _validated(q: Question) -> Question:
    if not isinstance(q.question, str) or not q.question.strip():
        raise ValueError("field 'question': expected non-empty text")
    if len(q.options) < 2:
        raise ValueError(f"field 'options': expected at least 2 options, got {len(q.options)}")
    for letter, text in q.options.items():
        if not (isinstance(letter, str) and len(letter) == 1 and letter in OPTION_LETTERS):
            raise ValueError(f"field 'options': expected capital letters A-Z as keys, got {letter!r}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"field 'options.{letter}': expected non-empty text")
    if q.answer is not None and (not isinstance(q.answer, str) or q.answer not in q.options):
        raise ValueError(f"field 'answer': expected one of {'/'.join(q.options)}, got {q.answer!r}")
    _check_extra(q.extra)
    return q


def _check_extra(extra) -> None:
    if not isinstance(extra, dict):
        raise ValueError(f"field 'extra': expected an object, got {type(extra).__name__}")
    for name in TEXT_LISTS:
        value = extra.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"field '{name}': expected a list of texts, got {type(value).__name__}")
    evidence = extra.get("evidence")
    if evidence is not None and not isinstance(evidence, list):
        raise ValueError(f"field 'evidence': expected a list, got {type(evidence).__name__}")
    teacher = extra.get("teacher")
    if teacher is not None:
        rationales = teacher.get("rationales") if isinstance(teacher, dict) else None
        if not isinstance(teacher, dict) or (rationales is not None and not (
                isinstance(rationales, list) and all(isinstance(r, str) for r in rationales))):
            raise ValueError("field 'extra.teacher.rationales': expected a list of texts")


def _load_hub(dataset: str, split: str, *, strict: bool, limit: int | None):
    hub_id, config = HUB_IDS[dataset]
    try:
        import datasets as hf_datasets  # late: heavy, and only needed online

        rows = hf_datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # the hub library raises many types; all mean "not available here"
        raise TmdError(f"{dataset}/{split}: no local file and hub dataset {hub_id} is not reachable "
                       f"({type(e).__name__}); pass --data-path or set TMD_DATA_DIR") from None
    report = LoadReport(source=f"hub:{hub_id}")
    questions, seen = [], _Seen()
    for i, row in enumerate(rows):
        try:
            q = to_question(dict(row), dataset)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if strict:
                raise TmdError(f"hub:{hub_id}[{i}]: {_reason(e)}") from None
            report.skipped.append(f"hub:{hub_id}[{i}]: {_reason(e)}")
            continue
        if seen.first_time(q, f"hub:{hub_id}[{i}]", report):
            questions.append(q)
        if limit is not None and len(questions) >= limit:
            break
    report.loaded = len(questions)
    return questions, report
