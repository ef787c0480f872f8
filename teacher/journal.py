"""The run's memory: one fsynced JSONL line per teacher call, keyed by (question id, stage, index).

A call is done once its line is in the file; a rerun replays done calls from here and only asks the
teacher for the rest. Each line also carries a hash of the prompt it answered: a reply is replayed
only for that exact prompt (if parsing changed which subquestion is number 2, it is asked again;
the newer line wins). A kill can at worst leave a torn last line, which read_jsonl cuts off, so the
call it belonged to is simply asked again. The training sets are rebuilt from this file on every
run, so they can never disagree with it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from tmd_local.errors import TmdError
from tmd_local.jsonl import append_jsonl, read_jsonl, write_json_atomic

from .backends import Reply

JOURNAL_NAME = "journal.jsonl"
RUN_NAME = "run.json"

Key = tuple[str, str, int]  # (question id, stage, subquestion index; 0 for whole-question stages)


class Journal:
    def __init__(self, folder: Path):
        self.path = folder / JOURNAL_NAME
        self._lock = threading.Lock()
        self._replies: dict[Key, tuple[str, Reply]] = {}
        for lineno, record in enumerate(read_jsonl(self.path), start=1):
            try:
                key = (str(record["qid"]), str(record["stage"]), int(record["index"]))
                self._replies[key] = (record.get("prompt_sha", ""), Reply.from_dict(record["reply"]))
            except (KeyError, TypeError, ValueError):
                raise TmdError(f"{self.path}:{lineno}: not a teacher journal record; "
                               "fix or remove that line") from None

    def get(self, key: Key, messages: list[dict]) -> Reply | None:
        """The stored reply to exactly these messages, if any."""
        stored = self._replies.get(key)
        return stored[1] if stored and stored[0] == prompt_sha(messages) else None

    def add(self, key: Key, messages: list[dict], reply: Reply) -> Reply:
        """Append (fsynced) before anything else sees the reply, so what is used is on disk."""
        qid, stage, index = key
        sha = prompt_sha(messages)
        with self._lock:
            append_jsonl(self.path, {"qid": qid, "stage": stage, "index": index, "prompt_sha": sha,
                                     "reply": reply.to_dict()})
            self._replies[key] = (sha, reply)
        return reply

    def __len__(self) -> int:
        return len(self._replies)


def prompt_sha(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def check_run_identity(folder: Path, identity: dict) -> None:
    """Refuse to mix two different runs in one folder: replies from another teacher or other
    settings would be replayed as if they were this run's."""
    path = folder / RUN_NAME
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous is not None and previous != identity:
            changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
            raise TmdError(f"{folder}: holds a run with different {', '.join(changed)}; "
                           "use another --out, or delete that folder to start over")
        if previous is not None:
            return
    write_json_atomic(path, identity)
