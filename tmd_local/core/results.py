"""Reading evaluation results (docs/FORMATS.md §6), one line at a time, each checked against the
shape `tmd eval` writes before anything counts it.

`tmd report`, `--memory-budget` and `tmd eval`'s resume all read through here, so a line missing a
field, a string where a number belongs, `"correct": "no"` (which `bool()` would count as right) or a
file of another kind (questions, a teacher journal) is one error naming file:line and the field,
never a KeyError or a silently wrong accuracy. Records from before answers were scored (no
`stated_answer`, `answer_source`, `option_probs`) are accepted.
"""

from __future__ import annotations

from pathlib import Path

from .formats import ResultRecord
from .jsonl import read_jsonl_numbered


def read_results(path: Path, repair: bool = False) -> list[tuple[str, dict]]:
    """(file:line, record) for every line of a results file, each validated."""
    out = []
    for lineno, record in read_jsonl_numbered(Path(path), repair=repair):
        where = f"{path}:{lineno}"
        ResultRecord.from_json(record, where)  # the record's type; raises naming file:line and field
        out.append((where, record))
    return out
