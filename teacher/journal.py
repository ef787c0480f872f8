"""The run's memory: one fsynced JSONL line per teacher call, keyed by (question id, stage, index).

A call is done once its line is in the file; a rerun replays done calls from here and only asks the
teacher for the rest. Each line also carries a hash of the prompt it answered: a reply is replayed
only for that exact prompt (if parsing changed which subquestion is number 2, it is asked again;
the newer line wins). A kill can at worst leave a torn last line, which read_jsonl cuts off, so the
call it belonged to is simply asked again. The training sets are rebuilt from this file on every
run, so they can never disagree with it.

Each line names the teacher that wrote it, and a run only reads a journal whose every line names
its own teacher: with run.json lost, another teacher's replies would otherwise be replayed under
this teacher's name. Lines from before teachers were named are trusted only when run.json pins the
same teacher. Failures on this side (never a reply) are not journaled at all (backends.py).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from tmd_local.core.errors import TmdError
from tmd_local.core.jsonl import JsonError, append_jsonl, read_json, read_jsonl_numbered, write_json_atomic

from .backends import Reply

JOURNAL_NAME = "journal.jsonl"
RUN_NAME = "run.json"

Key = tuple[str, str, int]  # (question id, stage, subquestion index; 0 for whole-question stages)


class Journal:
    """teacher: the name this run writes into records; every line must carry it (or, from before
    lines named one, trust_unnamed: run.json pins this teacher). None reads any (for tools)."""

    def __init__(self, folder: Path, teacher: str | None = None, trust_unnamed: bool = False):
        self.path = folder / JOURNAL_NAME
        self.teacher = teacher
        self._lock = threading.Lock()
        self._replies: dict[Key, tuple[str, Reply]] = {}
        for lineno, record in read_jsonl_numbered(self.path):
            where = f"{self.path}:{lineno}"
            try:
                key = (str(record["qid"]), str(record["stage"]), int(record["index"]))
                reply = Reply.from_dict(record["reply"])
            except (KeyError, TypeError, ValueError, OverflowError):
                raise TmdError(f"{where}: not a teacher journal record; fix or remove that line") from None
            if not _well_typed(reply):
                raise TmdError(f"{where}: the reply's fields have the wrong types; fix or remove that line")
            self._check_teacher(record.get("teacher"), where, trust_unnamed)
            self._replies[key] = (str(record.get("prompt_sha", "")), reply)

    def _check_teacher(self, named, where: str, trust_unnamed: bool) -> None:
        if self.teacher is None or named == self.teacher or (named is None and trust_unnamed):
            return
        folder = self.path.parent
        if named is None:
            raise TmdError(f"{where}: a reply that names no teacher, and {folder / RUN_NAME} is missing or "
                           f"unreadable, so it may not be {self.teacher}'s; use another --out, or delete "
                           "that folder to start over")
        raise TmdError(f"{where}: a reply from teacher {named!r}, not {self.teacher!r}; use another --out, "
                       "or delete that folder to start over")

    def get(self, key: Key, messages: list[dict]) -> Reply | None:
        """The stored reply to exactly these messages, if any."""
        stored = self._replies.get(key)
        return stored[1] if stored and stored[0] == prompt_sha(messages) else None

    def add(self, key: Key, messages: list[dict], reply: Reply) -> Reply:
        """Append (fsynced) before anything else sees the reply, so what is used is on disk."""
        qid, stage, index = key
        sha = prompt_sha(messages)
        line = {"qid": qid, "stage": stage, "index": index, "prompt_sha": sha, "reply": reply.to_dict()}
        if self.teacher is not None:
            line["teacher"] = self.teacher
        with self._lock:
            append_jsonl(self.path, line)
            self._replies[key] = (sha, reply)
        return reply

    def __len__(self) -> int:
        return len(self._replies)


def prompt_sha(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def check_run_identity(folder: Path, identity: dict) -> bool:
    """Refuse to mix two different runs in one folder: replies from another teacher or other
    settings would be replayed as if they were this run's. True when run.json pins this very run;
    False when it is missing or unreadable (then record_run_identity writes it, once the journal
    has been checked line by line)."""
    path = folder / RUN_NAME
    if not path.exists():
        return False
    try:
        previous = read_json(path, "run.json")
    except (JsonError, TmdError):
        return False
    if not isinstance(previous, dict):
        return False
    if previous != identity:
        changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
        raise TmdError(f"{folder}: holds a run with different {', '.join(changed)}; "
                       "use another --out, or delete that folder to start over")
    return True


def record_run_identity(folder: Path, identity: dict) -> None:
    write_json_atomic(folder / RUN_NAME, identity)


def _well_typed(reply: Reply) -> bool:
    numbers = (reply.prompt_tokens, reply.completion_tokens, reply.seconds)
    return (isinstance(reply.text, str) and isinstance(reply.finish_reason, str) and isinstance(reply.detail, str)
            and (reply.problem is None or isinstance(reply.problem, str))
            and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers))
