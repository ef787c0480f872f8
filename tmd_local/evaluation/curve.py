"""The learning curve: accuracy by the number of training questions, per dataset (CurvePanel), on
the questions every point answered, with the zero-shot and majority-class levels, and its table."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from .rows import (
    Row,
    epochs_label,
    learning_rates,
    majority_rate,
    quant_mix,
    student_label,
    training_of,
    training_questions,
    tuned_label,
)

# --- learning curve ---------------------------------------------------------------------------

@dataclass
class CurvePanel:
    """One dataset's learning curve: each line (system, quant, teacher, epochs, lr) with its points
    (training questions, accuracy %), the zero-shot and mc levels and the majority class (letter,
    accuracy %), all on the same test questions."""
    dataset: str
    common: set[str]
    lines: dict[tuple, list[tuple[int, float]]]
    levels: list[tuple[str, float]]
    majority: tuple[str, float]


def learning_curve(rows: list[Row]) -> list[CurvePanel]:
    """Fine-tuned TMD and DRD (every module fine-tuned) trained on at least two amounts of data. A
    configuration seen at one size only (another learning rate, quant or number of epochs) is no
    curve: it never decides which questions the points share. One that differs from a curve only in
    its epochs joins as a lone point when it answered all of them (the paper's 3 epochs at the
    largest size, beside the 1-epoch curve); the Quantization section has the other quants.
    Test split only: held-out train questions (the rows that chose the learning rate) are no point."""
    rows = [r for r in rows if r.config["split"] == "test"]
    candidates = [r for r in rows if r.config["system"] in ("tmd", "drd") and training_questions(r.config)
                  and "zero-shot" not in tuned_label(r.config)
                  and set(tuned_label(r.config).split(", ")) >= set(r.config["models"])]
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in candidates:
        groups[(row.config["dataset"], *_line_key(row.config))].append(row)
    curve = [r for g in groups.values() if len({training_questions(r.config) for r in g}) >= 2 for r in g]
    curve_keys = {_but_epochs(r) for r in curve}
    lone = [r for r in candidates if r not in curve and _but_epochs(r) in curve_keys]
    panels = []
    for dataset in sorted({r.config["dataset"] for r in curve}):
        points = [r for r in curve if r.config["dataset"] == dataset]
        common = set.intersection(*(set(r.runs[0].records) for r in points))
        if not common:
            continue  # no question every point answered: nothing to compare
        lines: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
        covering = [r for r in lone if r.config["dataset"] == dataset and common <= set(r.runs[0].records)]
        for row in points + covering:
            lines[_line_key(row.config)].append((training_questions(row.config), _accuracy_on_ids(row, common)))
        levels = _levels([r for r in rows if r.config["dataset"] == dataset and r not in candidates], common)
        letter, rate = majority_rate([points[0].runs[0].records[i] for i in common])
        panels.append(CurvePanel(dataset, common, {k: sorted(v) for k, v in sorted(lines.items())}, levels,
                                 (letter, 100 * rate)))
    return panels


def _but_epochs(row: Row) -> tuple:
    system, quant, teacher, _epochs, lr = _line_key(row.config)
    return row.config["dataset"], system, quant, teacher, lr


def _line_key(config: dict) -> tuple:
    return config["system"].upper(), quant_mix(config), config["teacher"], epochs_label(config), learning_rates(config)


def line_label(key: tuple) -> str:
    system, quant, teacher, epochs, lr = key
    return f"{system} {quant}, {teacher}, {epochs} ep" + (f", lr {lr}" if lr else "")


def _accuracy_on_ids(row: Row, ids: set[str]) -> float | None:
    records = row.runs[0].records
    if not ids or not ids <= set(records):
        return None
    return 100 * sum(bool(records[i]["correct"]) for i in ids) / len(ids)


def _levels(others: list[Row], common: set[str]) -> list[tuple[str, float]]:
    """Zero-shot systems and mc on the same questions."""
    levels = []
    for row in others:
        if training_of(row.config) or row.config["system"] not in ("tmd", "drd", "mc"):
            continue
        y = _accuracy_on_ids(row, common)
        if y is not None:
            levels.append((f"{row.config['system'].upper()} zero-shot {student_label(row.config)}", y))
    return levels


def learning_curve_table(panels: Sequence[CurvePanel]) -> list[str]:
    """The plot's numbers: a row per line, a column per amount of training data."""
    out = []
    for panel in panels:
        columns = size_columns({x for xy in panel.lines.values() for x, _ in xy})
        out += [f"## Learning curve ({panel.dataset}, the same {len(panel.common)} test questions)", "",
                "Accuracy (%) by questions the answering module (Reasoner or DRD) was trained on.", "",
                "| system | " + " | ".join(_size_label(c) for c in columns) + " |",
                "|---" * (1 + len(columns)) + "|"]
        for key, xy in panel.lines.items():
            cells = [[y for x, y in xy if x in column] for column in columns]
            out.append(f"| {line_label(key)} | "
                       + " | ".join("/".join(f"{y:.1f}" for y in c) if c else "-" for c in cells) + " |")
        letter, rate = panel.majority
        out += [""] + [f"- {label}: {y:.1f}" for label, y in panel.levels]
        out += [f"- majority class ({letter}): {rate:.1f}", ""]
    return out


def size_columns(sizes: set[int], tolerance: float = 0.02) -> list[list[int]]:
    """Training sizes within 2% of each other share a column: one teacher run gives DRD and the Reasoner
    a question or two apart (the teacher's filter drops different records, then 5% are held out)."""
    columns: list[list[int]] = []
    for n in sorted(sizes):
        if columns and n <= columns[-1][0] * (1 + tolerance):
            columns[-1].append(n)
        else:
            columns.append([n])
    return columns


def _size_label(column: list[int]) -> str:
    return f"{column[0]} q" if len(column) == 1 else f"{column[0]}-{column[-1]} q"
