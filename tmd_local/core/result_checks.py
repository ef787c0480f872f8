"""The field-by-field checks of one evaluation results line (docs/FORMATS.md §6): a missing field, a
string where a number belongs or `"correct": "no"` is one error naming the place and the field.
Below formats.py (ResultRecord.from_json calls check_result), so it imports nothing of ours but errors."""

from __future__ import annotations

import math
from typing import Any

from .errors import TmdError

CONFIG_TEXT_FIELDS = ("system", "dataset", "split", "teacher")
STAGE_COUNTS = ("prompt_tokens", "completion_tokens")
STAGE_SECONDS = ("peak_rss_mb", "seconds", "load_seconds")


class _Bad(Exception):
    pass


def check_result(record: Any, where: str) -> None:
    try:
        _check(record)
    except _Bad as e:
        raise TmdError(f"{where}: {e}") from None


def _check(record: Any) -> None:
    if not isinstance(record, dict):
        raise _Bad(f"not a tmd eval results record (a JSON {type(record).__name__}, expected an object)")
    if "config" not in record or "stages" not in record:
        kind = _other_kind(record)
        missing = "config" if "config" not in record else "stages"
        raise _Bad(f"not a tmd eval results record (no field {missing!r}{'; it looks like ' + kind if kind else ''})")
    _config(record["config"])
    _text(record, "id", "the question id")
    if "correct" not in record:
        raise _Bad("field 'correct': missing")
    if record["correct"] is not None and not isinstance(record["correct"], bool):
        raise _Bad(f"field 'correct': expected true, false or null, got {_shown(record.get('correct'))}")
    for field in ("answer", "gold", "stated_answer", "answer_source", "answer_norm"):
        if record.get(field) is not None and not isinstance(record[field], str):
            raise _Bad(f"field {field!r}: expected a letter or null, got {_shown(record[field])}")
    if "answer" not in record:
        raise _Bad("field 'answer': missing")
    gold, correct = record.get("gold"), record["correct"]
    if gold is not None and correct is not None and correct != (record["answer"] == gold):
        raise _Bad(f"field 'correct' is {str(correct).lower()} but the answer {record['answer']!r} "
                   f"{'differs from' if correct else 'equals'} the gold {gold!r}")
    if gold is None and "gold" in record and correct is not None:
        raise _Bad("field 'correct': a question without a gold answer cannot be scored (expected null)")
    _stages(record["stages"])
    if "wall_seconds" in record:
        _number(record["wall_seconds"], "wall_seconds")
    probs = record.get("option_probs")
    if probs is not None:
        if not isinstance(probs, dict):
            raise _Bad(f"field 'option_probs': expected an object letter -> probability, got {_shown(probs)}")
        for letter, p in probs.items():
            _number(p, f"option_probs.{letter}")
    for field in ("subquestions", "knowledge"):
        if field in record and not _texts(record[field]):
            raise _Bad(f"field {field!r}: expected a list of texts")
    if "question" in record:
        _question(record["question"])


def _config(config: Any) -> None:
    if not isinstance(config, dict):
        raise _Bad(f"field 'config': expected an object, got {_shown(config)}")
    for field in CONFIG_TEXT_FIELDS:
        _text(config, field, "text", prefix="config.")
    models = config.get("models")
    if not isinstance(models, dict) or not models:
        raise _Bad(f"field 'config.models': expected an object role -> model, got {_shown(models)}")
    for role, model in models.items():
        if not isinstance(model, dict):
            raise _Bad(f"field 'config.models.{role}': expected an object, got {_shown(model)}")
        for field in ("name", "sha256"):
            if not isinstance(model.get(field), str):
                got = _shown(model[field]) if field in model else "nothing"
                raise _Bad(f"field 'config.models.{role}.{field}': expected text, got {got}")
        for field in ("params", "size_bytes", "bits_per_weight"):
            if field in model:
                _number(model[field], f"config.models.{role}.{field}")
        training = model.get("training")
        if training is not None:
            if not isinstance(training, dict):
                raise _Bad(f"field 'config.models.{role}.training': expected an object")
            for field in ("questions", "epochs"):
                _number(training.get(field), f"config.models.{role}.training.{field}")
    settings = config.get("settings")
    if not isinstance(settings, dict):
        raise _Bad(f"field 'config.settings': expected an object, got {_shown(settings)}")
    for field, value in settings.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _Bad(f"field 'config.settings.{field}': not a finite number")


def _stages(stages: Any) -> None:
    if not isinstance(stages, dict) or not stages:
        raise _Bad(f"field 'stages': expected an object with one entry per stage, got {_shown(stages)}")
    for stage, figures in stages.items():
        if not isinstance(figures, dict):
            raise _Bad(f"field 'stages.{stage}': expected an object, got {_shown(figures)}")
        for field in ("peak_rss_mb", *STAGE_COUNTS):
            if field not in figures:
                raise _Bad(f"field 'stages.{stage}.{field}': missing")
        for field in (*STAGE_COUNTS, *STAGE_SECONDS):
            if field in figures:
                _number(figures[field], f"stages.{stage}.{field}", whole=field in STAGE_COUNTS)


def _question(question: Any) -> None:
    if not isinstance(question, dict):
        raise _Bad(f"field 'question': expected an object, got {_shown(question)}")
    if not isinstance(question.get("options", {}), dict):
        raise _Bad("field 'question.options': expected an object letter -> text")
    extra = question.get("extra", {})
    if not isinstance(extra, dict):
        raise _Bad("field 'question.extra': expected an object")
    for field in ("decomposition", "facts"):
        if extra.get(field) is not None and not _texts(extra[field]):
            raise _Bad(f"field 'question.extra.{field}': expected a list of texts")


def _text(obj: dict, field: str, what: str, prefix: str = "") -> None:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"field '{prefix}{field}': expected {what}, got {_shown(value) if field in obj else 'nothing'}")


def _number(value: Any, field: str, whole: bool = False) -> None:
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
        what = "a whole number >= 0" if whole else "a number >= 0"
        raise _Bad(f"field {field!r}: expected {what}, got {_shown(value)}")


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _other_kind(record: dict) -> str:
    if {"qid", "stage", "reply"} <= set(record):
        return "a teacher journal line"
    if {"module", "messages", "target"} <= set(record):
        return "a training set line (tmd teach)"
    if "question" in record and ("options" in record or "qid" in record or "answerKey" in record):
        return "a question from a data file"
    return ""
