"""A whole teacher run: ask (or replay) every question, then write the four training sets.

The training sets, rejected.jsonl and summary.json are rebuilt from scratch from the journal at the
end of every run and replaced atomically, so a question appears exactly once however often the run
was killed and restarted.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tmd_local.core.errors import TmdError
from tmd_local.core.jsonl import write_json_atomic, write_text_atomic
from tmd_local.core.prompts import PROMPT_VERSION
from tmd_local.core.records import Question

from .gold import gold_outcome
from .journal import Journal, check_run_identity, record_run_identity
from .model_teacher import Caller, Stopped, outcome, replay, teach_question
from .traces import MODULES, Context, Outcome

REJECTED_NAME, SUMMARY_NAME = "rejected.jsonl", "summary.json"


@dataclass
class RunConfig:
    dataset: str
    split: str
    limit: int | None
    source: str
    out: Path
    teacher: str  # the label written into records
    keep_wrong: bool = False
    concurrency: int = 1
    max_tokens: dict[str, int] = field(default_factory=dict)
    temperature: float = 0.0
    teacher_info: dict = field(default_factory=dict)  # base URL etc. (never the key)

    def context(self) -> Context:
        return Context(self.teacher, self.dataset, self.split, self.keep_wrong)

    def identity(self) -> dict:
        return {"teacher": self.teacher, "dataset": self.dataset, "split": self.split,
                "prompt_version": PROMPT_VERSION, "max_tokens": self.max_tokens,
                "temperature": self.temperature}


class Progress:
    """Callbacks for a UI; the CLI's rich progress bar implements them."""

    def start(self, total: int, done: int) -> None: ...
    def advance(self) -> None: ...


def prepare_out_dir(out: Path) -> None:
    """Create the folder and prove it is writable before any teacher time is spent."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise TmdError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    for stale in out.glob(".*.tmp"):  # temp files of an atomic write cut short by a kill
        stale.unlink(missing_ok=True)


# --- gold --------------------------------------------------------------------------------------

def run_gold(questions: list[Question], cfg: RunConfig) -> dict:
    started = time.perf_counter()
    ctx = cfg.context()
    outcomes = [gold_outcome(q, ctx) for q in questions]
    return finish(outcomes, questions, cfg, time.perf_counter() - started, Counter(), {})


# --- model teachers ------------------------------------------------------------------------------

def run_model(questions: list[Question], cfg: RunConfig, backend, progress: Progress) -> dict:
    pinned = check_run_identity(cfg.out, cfg.identity())
    journal = Journal(cfg.out, cfg.teacher, trust_unnamed=pinned)  # every line is this teacher's
    if not pinned:
        record_run_identity(cfg.out, cfg.identity())
    started = time.perf_counter()
    done = {q.id: run for q in questions if (run := replay(q, journal)) is not None}
    pending = [q for q in questions if q.id not in done]
    progress.start(len(questions), len(done))
    caller = Caller(journal, backend, cfg.max_tokens)
    for q, run in _ask_all(pending, caller, max(1, cfg.concurrency), progress.advance):
        done[q.id] = run
    runs = [done[q.id] for q in questions]
    ctx = cfg.context()
    tokens = Counter()
    for run in runs:
        for reply in run.replies():
            tokens["prompt"] += reply.prompt_tokens
            tokens["completion"] += reply.completion_tokens
            tokens["teacher_seconds"] += reply.seconds
    extra = {"resumed_questions": len(questions) - len(pending), "new_questions": len(pending),
             "teacher_calls": caller.calls_made, "retries": getattr(backend, "retried", 0)}
    return finish([outcome(r, ctx) for r in runs], questions, cfg, time.perf_counter() - started,
                  tokens, extra)


def _ask_all(pending: list[Question], caller: Caller, workers: int, on_done: Callable[[], None]):
    """Yield (question, run) as questions finish. The first fatal error stops the other workers
    before their next call and is raised; their finished calls are already journaled."""
    if workers == 1:
        for q in pending:
            yield q, teach_question(q, caller)
            on_done()
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="teacher") as pool:
        futures = {pool.submit(teach_question, q, caller): q for q in pending}
        remaining = set(futures)
        try:
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in finished:
                    if future.exception() is None:
                        yield futures[future], future.result()
                        on_done()
                fatal = next((f.exception() for f in finished
                              if f.exception() is not None and not isinstance(f.exception(), Stopped)), None)
                if fatal is not None:
                    raise fatal
        finally:
            caller.stop.set()  # also on Ctrl-C or a fatal error: queued questions never start
            for future in remaining:
                future.cancel()


# --- output ------------------------------------------------------------------------------------

def finish(outcomes: list[Outcome], questions: list[Question], cfg: RunConfig, seconds: float,
           tokens: Counter, extra: dict) -> dict:
    """Write the four training sets and rejected.jsonl atomically, then summary.json last: the old
    summary goes first, so a summary on disk always describes the files beside it."""
    (cfg.out / SUMMARY_NAME).unlink(missing_ok=True)
    kept = {m: [] for m in MODULES}
    rejected = []
    for o in outcomes:
        for rec in o.kept:
            kept[rec["module"]].append(rec)
        rejected.extend(o.rejected)
    for module, records in kept.items():
        write_text_atomic(cfg.out / f"{module}.jsonl", _jsonl(records))
    write_text_atomic(cfg.out / REJECTED_NAME, _jsonl(rejected))
    summary = _summary(kept, rejected, questions, cfg, seconds, tokens, extra)
    write_json_atomic(cfg.out / SUMMARY_NAME, summary)
    return summary


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _summary(kept, rejected, questions, cfg: RunConfig, seconds, tokens, extra) -> dict:
    by_module = {m: {"kept": len(kept[m]), "rejected": {}} for m in MODULES}
    for rec in rejected:
        reasons = by_module[rec["module"]]["rejected"]
        reasons[rec["reason"]] = reasons.get(rec["reason"], 0) + 1
    new = extra.get("new_questions", len(questions))
    return {
        "teacher": cfg.teacher, **({"teacher_info": cfg.teacher_info} if cfg.teacher_info else {}),
        "dataset": cfg.dataset, "split": cfg.split, "limit": cfg.limit, "source": cfg.source,
        "questions": len(questions), "keep_wrong": cfg.keep_wrong, "prompt_version": PROMPT_VERSION,
        "modules": by_module,
        "tokens": {"prompt": int(tokens["prompt"]), "completion": int(tokens["completion"])},
        "teacher_seconds": round(tokens["teacher_seconds"], 2),
        "wall_seconds": round(seconds, 2),
        "seconds_per_new_question": round(seconds / new, 3) if new else None,
        "max_tokens": cfg.max_tokens or None, "concurrency": cfg.concurrency,
        **extra,
    }
