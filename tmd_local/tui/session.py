"""What the app does, without the UI: parse what the user typed, pick what to run, keep history,
export traces. Everything here is plain Python, tested without a terminal."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..core.errors import TmdError
from ..core.records import Question
from ..runtime.bundle import Bundle, open_source
from ..runtime.pipeline import ModuleSet, Trace

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTERED = re.compile(r"^\s*[\(\[]?([A-Za-z])[\)\]\.:]\s+(.+)$")


def parse_options(text: str) -> dict[str, str]:
    """One option per line: 'A. a marsh' / '(B) a tundra' / 'C: plains', or bare lines lettered A, B..."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    options: dict[str, str] = {}
    if len(lines) > len(_LETTERS):
        raise TmdError(f"options: at most {len(_LETTERS)} (A-Z), got {len(lines)} lines")
    for i, line in enumerate(lines):
        m = _LETTERED.match(line)
        letter, value = (m.group(1).upper(), m.group(2).strip()) if m else (chr(ord("A") + i), line)
        if letter in options:
            raise TmdError(f"options: letter {letter} appears twice")
        options[letter] = value
    if len(options) < 2:
        raise TmdError("options: give at least two, one per line (e.g. 'A. yes' and 'B. no')")
    return options


def make_question(text: str, options_text: str, gold: str | None = None, qid: str | None = None) -> Question:
    if not text.strip():
        raise TmdError("question: type a question first")
    options = parse_options(options_text)
    return Question(qid or f"app-{datetime.now():%H%M%S}", text.strip(), options,
                    gold if gold in options else None)


def options_text(question: Question) -> str:
    return "\n".join(f"{k}. {v}" for k, v in question.options.items())


@dataclass(frozen=True)
class Target:
    """One configuration to run: a bundle (or a model as a zero-shot bundle) in one quantization;
    'q8_0+lora' runs merged roles that also ship as base + LoRA in that form."""
    bundle: Bundle
    quant: str

    @property
    def label(self) -> str:
        return f"{self.bundle.name} ({self.quant})"

    def modules(self) -> ModuleSet:
        return self.bundle.module_set(self.quant)


def compare_target(text: str, current: Bundle) -> Target | None:
    """What the 'compare with' box names: a quant of the current bundle, or another bundle/model
    (registry name or GGUF path, run in its default quant). Empty: no comparison."""
    text = text.strip()
    if not text:
        return None
    if text.lower() in current.choices() or "=" in text:  # a quant, or a per-module mix of them
        current.module_set(text.lower())  # names what is missing, before anything runs
        return Target(current, text.lower())
    other = open_source(model=text)
    return Target(other, other.default_quant)


@dataclass
class RunRecord:
    """One question asked in this session: its traces per target, and how the run ended."""
    question: Question
    system: str
    targets: list[str]
    traces: dict[str, Trace] = field(default_factory=dict)
    status: str = "running"  # running | done | stopped | failed
    message: str = ""
    started: datetime = field(default_factory=datetime.now)

    def summary(self) -> str:
        answers = " vs ".join(self.traces[t].answer or "?" for t in self.targets if t in self.traces)
        mark = {"done": "", "stopped": " (stopped)", "failed": " (failed)", "running": " ..."}[self.status]
        text = self.question.question if len(self.question.question) <= 48 else self.question.question[:47] + "…"
        return f"{self.started:%H:%M:%S} {self.system.upper()} {answers or '-'}{mark}  {text}"

    def to_dict(self) -> dict:
        return {"question": self.question.to_dict(), "system": self.system, "status": self.status,
                "message": self.message, "started": self.started.isoformat(timespec="seconds"),
                "runs": [{"target": t, "trace": self.traces[t].to_dict()} for t in self.targets
                         if t in self.traces]}


def export_run(record: RunRecord, path: Path) -> Path:
    """Write a run as JSON (path ends in .json) or Markdown (anything else)."""
    from ..core.jsonl import check_output_file

    path = Path(path).expanduser()
    check_output_file(path, "export to")
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(record.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        path.write_text(run_markdown(record), encoding="utf-8")
    return path


def default_export_path(record: RunRecord, suffix: str = ".md") -> Path:
    from ..core.paths import traces_dir

    return traces_dir() / f"{record.started:%Y%m%d-%H%M%S}-{record.system}{suffix}"


def run_markdown(record: RunRecord) -> str:
    q = record.question
    lines = [f"# {record.system.upper()}: {q.question}", ""]
    lines += [f"- **{k}.** {v}" for k, v in q.options.items()]
    if q.answer:
        lines += ["", f"Gold answer: **{q.answer}**"]
    for target in record.targets:
        trace = record.traces.get(target)
        if trace is None:
            continue
        lines += ["", f"## {target}", ""]
        if trace.system == "tmd":
            lines += ["### Subquestions and knowledge", ""]
            if not trace.subquestions:
                lines.append("No decomposition")
            for i, (sq, kn) in enumerate(zip(trace.subquestions, trace.knowledge), start=1):
                lines += [f"{i}. **{sq}**", "", f"   {kn.strip()}", ""]
        lines += ["### Reasoning", "", trace.reasoning.strip() or "(no output)", ""]
        answer = f"{trace.answer}. {q.options[trace.answer]}" if trace.answer else "none parsed"
        verdict = "" if trace.correct is None else (" (correct)" if trace.correct else " (wrong)")
        lines += [f"**Final answer: {answer}**{verdict}", "", "| stage | how | load s | gen s | in tok | "
                  "out tok | tok/s | peak MiB |", "|---|---|---|---|---|---|---|---|"]
        for s in trace.stages.values():
            lines.append(f"| {s.stage} | {s.loaded_by} | {s.load_seconds:.2f} | {s.seconds:.2f} | "
                         f"{s.prompt_tokens} | {s.completion_tokens} | {s.tokens_per_second:.1f} | "
                         f"{s.peak_rss_mb:.0f} |")
        lines += ["", *(f"> warning: {w}" for w in trace.warnings)]
    if record.status != "done":
        lines += ["", f"_Run {record.status}: {record.message}_"]
    return "\n".join(lines).rstrip() + "\n"
