"""The records tmd writes at each boundary (docs/FORMATS.md), one type each, with `to_json` (the
dict written, key order included, so files stay byte-for-byte what they were) and `from_json`
(validation where the data enters: errors name the file or line, the field and what was expected).

- TeacherRecord: one line of a teacher run's `<role>.jsonl` / `rejected.jsonl` (section 2);
- AdapterMeta:   an adapter folder's `tmd.json`, written last by the trainer (section 3);
- Manifest:      a bundle's `manifest.json`, top level (section 5; roles are read by tmd_local/runtime/bundle.py);
- ResultConfig / ResultRecord: one line of `tmd eval`'s results JSONL (section 6; every field is
  checked by tmd_local/core/result_checks.py).

Torch-free and near the bottom of the import graph: errors, roles and prompts only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import TmdError
from .prompts import PROMPT_VERSION
from .result_checks import check_result
from .roles import ROLES

BUNDLE_FORMAT = "tmd-bundle/1"


def _require_object(data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise TmdError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def _text(data: dict, key: str, where: str, expected: str, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise TmdError(f"{where}: field '{key}': expected {expected}, got {value!r}")
    return value


def _with_extra(record, keys: tuple[str, ...], omit_if_none: str) -> dict:
    """A record's known keys in order (`omit_if_none` left out when None), then its unknown ones."""
    out = {key: getattr(record, key) for key in keys}
    if out[omit_if_none] is None:
        del out[omit_if_none]
    return {**out, **record.extra}


def _split_known(data: dict, keys: tuple[str, ...]) -> tuple[dict, dict]:
    """(the keys this version knows, the others in their order)."""
    return {k: data[k] for k in keys if k in data}, {k: v for k, v in data.items() if k not in keys}


def _optional_text(data: dict, key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise TmdError(f"{where}: field '{key}': expected text or null, got {value!r}")
    return value


# --- section 2: teacher records --------------------------------------------------------------

@dataclass
class TeacherRecord:
    """Inputs and target of one training example, never a pre-rendered prompt."""
    id: str                      # "<question id>", or "<question id>#<n>" for the Informant
    module: str
    messages: list[dict]
    target: str
    teacher: str
    dataset: str | None = None
    split: str | None = None
    prompt_version: str = ""
    reason: str | None = None    # rejected.jsonl only: why the record was not kept

    @property
    def group(self) -> str:
        """The question id: an Informant's "<qid>#<i>" records share one."""
        return self.id.split("#", 1)[0]

    def to_json(self) -> dict:
        record = {"id": self.id, "module": self.module, "messages": self.messages, "target": self.target,
                  "teacher": self.teacher, "dataset": self.dataset, "split": self.split,
                  "prompt_version": self.prompt_version}
        if self.reason is not None:
            record["reason"] = self.reason
        return record

    @classmethod
    def from_json(cls, obj: Any, where: str, module: str | None = None) -> "TeacherRecord":
        """`module`: the file's module; a record naming another one is refused (wrong file)."""
        obj = _require_object(obj, where)
        if module is not None and obj.get("module", module) != module:
            raise TmdError(f"{where}: field 'module' is {obj.get('module')!r}, expected {module!r} "
                           "(is this the right file?)")
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            raise TmdError(f"{where}: field 'messages': expected a non-empty list of {{role, content}}")
        for i, m in enumerate(messages):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise TmdError(f"{where}: field 'messages[{i}]': expected {{\"role\": str, \"content\": str}}")
        target = obj.get("target")
        if not isinstance(target, str) or not target.strip():
            raise TmdError(f"{where}: field 'target': expected a non-empty string")
        rid = _text(obj, "id", where, "a non-empty string")
        teacher = _text(obj, "teacher", where, "a string such as 'gold' or 'openai:<model>'")
        return cls(id=rid, module=obj.get("module", module), messages=messages, target=target,
                   teacher=teacher, dataset=obj.get("dataset"), split=obj.get("split"),
                   prompt_version=str(obj.get("prompt_version", "")), reason=obj.get("reason"))


# --- section 3: tmd.json ---------------------------------------------------------------------

@dataclass
class AdapterMeta:
    """tmd.json: what an adapter was trained from and on. Its presence means training finished."""
    module: str
    base: str | None
    teacher: str | None
    data: str | None
    base_source: str | None = None
    data_sha256: str | None = None
    hyperparameters: dict = field(default_factory=dict)
    # {"questions", "examples", "steps", "epochs", "lr"} actually trained (held-out excluded);
    # None for adapters not made by the trainer (exporter/devtools.py)
    training: dict | None = None
    tmd_version: str | None = None
    prompt_version: str | None = None
    extra: dict = field(default_factory=dict)  # keys of other versions, written back unchanged

    KEYS = ("module", "base", "base_source", "teacher", "data", "data_sha256", "hyperparameters",
            "training", "tmd_version", "prompt_version")

    def to_json(self) -> dict:
        return _with_extra(self, self.KEYS, omit_if_none="training")

    @classmethod
    def from_json(cls, data: Any, where: str) -> "AdapterMeta":
        data = _require_object(data, where)
        module = data.get("module")
        if module is not None and module not in ROLES:
            raise TmdError(f"{where}: field 'module': unknown module {module!r} (expected one of {', '.join(ROLES)})")
        for key in ("base", "base_source", "teacher", "data", "data_sha256", "tmd_version", "prompt_version"):
            _optional_text(data, key, where)
        for key in ("hyperparameters", "training"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise TmdError(f"{where}: field '{key}': expected an object, got {data[key]!r}")
        known, extra = _split_known(data, cls.KEYS)
        known["hyperparameters"] = known.get("hyperparameters") or {}
        for key in ("module", "base", "teacher", "data"):
            known.setdefault(key, None)
        return cls(**known, extra=extra)

    def results_training(self) -> dict | None:
        """`training` with the learning rate, which results must name (adapters trained before it
        was recorded there still have it in `hyperparameters`)."""
        if not self.training:
            return None
        lr = self.hyperparameters.get("lr")
        return {**self.training, "lr": lr} if lr is not None and "lr" not in self.training else self.training


# --- section 5: the bundle manifest ----------------------------------------------------------

@dataclass
class Manifest:
    """manifest.json's top level. `modules` maps each role to its entry (mode, files, adapter...),
    which tmd_local/runtime/bundle.py parse_role reads; `extra` holds the other top-level keys in order
    (llama_cpp_version, default_quant, base_model, base_sha256, ...)."""
    base: str
    modules: dict[str, dict]
    tmd_version: str | None = None
    created: str | None = None
    teacher: Any = None          # the fine-tuned modules' shared value, "mixed", or null
    data: Any = None
    prompt_version: Any = None
    extra: dict = field(default_factory=dict)
    format: str = BUNDLE_FORMAT

    HEAD = ("format", "tmd_version", "created", "base", "teacher", "data", "prompt_version")

    def to_json(self) -> dict:
        return {**{key: getattr(self, key) for key in self.HEAD}, **self.extra, "modules": self.modules}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Manifest":
        data = _require_object(data, where)
        if data.get("format") != BUNDLE_FORMAT:
            raise TmdError(f"{where}: field 'format': expected {BUNDLE_FORMAT!r}, got {data.get('format')!r}")
        base = data.get("base")
        if not isinstance(base, str) or not base.strip():
            raise TmdError(f"{where}: field 'base': expected a model name or GGUF path, got {base!r}")
        modules = data.get("modules")
        if not isinstance(modules, dict):
            raise TmdError(f"{where}: field 'modules': expected an object with {', '.join(ROLES)}")
        head = {key: data.get(key) for key in cls.HEAD if key != "format"}
        extra = {k: v for k, v in data.items() if k not in cls.HEAD and k != "modules"}
        return cls(modules=modules, extra=extra, **head)

    @property
    def default_quant(self) -> str | None:
        return self.extra.get("default_quant")

    def prompt_version_warning(self, where: str) -> str | None:
        """One line when the modules were trained on prompts other than this tmd's, else None."""
        if not isinstance(self.prompt_version, str) or self.prompt_version == PROMPT_VERSION:
            return None
        return (f"{where}: prompt_version {self.prompt_version!r} differs from this tmd's {PROMPT_VERSION!r}; "
                "its modules were trained on other prompts than they will be given (results are labelled "
                "with the bundle's version)")


# --- section 6: evaluation results -----------------------------------------------------------

@dataclass
class ResultConfig:
    """What produced a result: system, data, teacher, each role's model file and the settings."""
    system: str
    dataset: str
    split: str
    teacher: str
    models: dict[str, dict]      # role -> {name, file, path, sha256, file_type, ...; mode, training}
    settings: dict
    prompt_version: str = PROMPT_VERSION
    tmd_version: str | None = None
    questions: dict | None = None  # {"source", "limit", "n", "offset"?}: which questions were asked
    extra: dict = field(default_factory=dict)

    KEYS = ("system", "dataset", "split", "teacher", "models", "settings", "prompt_version", "tmd_version",
            "questions")

    def to_json(self) -> dict:
        return _with_extra(self, self.KEYS, omit_if_none="questions")

    @classmethod
    def from_json(cls, data: dict) -> "ResultConfig":
        """From a config already checked by tmd_local/core/result_checks.py (ResultRecord.from_json)."""
        known, extra = _split_known(data, cls.KEYS)
        return cls(**known, extra=extra)


@dataclass
class ResultRecord:
    """One question under one configuration: the config, its key, the trace's answer fields
    (id, system, answer, gold, correct, ..., stages, warnings) and the wall time per question."""
    config: dict                 # ResultConfig.to_json(), kept as written: config_key hashes it
    answer: dict                 # the trace's fields, in the order the trace gives them
    config_key: str | None = None
    wall_seconds: float | None = None

    def to_json(self) -> dict:
        record = {"config_key": self.config_key} if self.config_key is not None else {}
        record["config"] = self.config
        record.update(self.answer)
        if self.wall_seconds is not None:
            record["wall_seconds"] = self.wall_seconds
        return record

    @classmethod
    def from_json(cls, record: Any, where: str) -> "ResultRecord":
        check_result(record, where)
        answer = {k: v for k, v in record.items() if k not in ("config_key", "config", "wall_seconds")}
        return cls(record["config"], answer, record.get("config_key"), record.get("wall_seconds"))
