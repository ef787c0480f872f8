"""The report's per-configuration tables, as Markdown lines: accuracy per system and dataset, cost
per question, quantization (accuracy, agreement with f16, size, speed) and per-module quantization
sensitivity, and the majority-class lines every table is read against."""

from __future__ import annotations

from collections import defaultdict

from ..runtime.bundle import QuantChoice
from .evaluate import stated_answer
from .rows import Row, majority_rate, quant_mix, student_label, tuned_label


def majority_lines(rows: list[Row]) -> list[str]:
    """Per dataset and question count, the majority-class rate every system must beat."""
    seen: dict[tuple, tuple[str, float]] = {}
    for row in rows:
        records = list(row.runs[0].records.values())
        seen[(row.config["dataset"], row.config["split"], len(records))] = majority_rate(records)
    return [f"Majority class on {dataset} {split} ({n} questions): always answering {letter} scores "
            f"{100 * rate:.1f}%." for (dataset, split, n), (letter, rate) in sorted(seen.items())]


def accuracy_table(rows: list[Row]) -> list[str]:
    datasets = sorted({r.config["dataset"] for r in rows})
    systems: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for row in rows:
        c = row.config
        systems[(c["system"].upper(), student_label(c), c["teacher"], tuned_label(c))][c["dataset"]] = row
    out = ["## Accuracy per system and dataset (Tables 1-3 analog)", "",
           "| system | student (quant) | teacher | fine-tuned modules | " + " | ".join(datasets) + " |",
           "|---" * (4 + len(datasets)) + "|"]
    for (system, student, teacher, tuned), cells in sorted(systems.items()):
        values = [cells[d].cell() if d in cells else "-" for d in datasets]
        out.append(f"| {system} | {student} | {teacher} | {tuned} | " + " | ".join(values) + " |")
    return out


def detail_table(rows: list[Row]) -> list[str]:
    out = ["## Cost per question", "",
           "| system | dataset | split | student | seeds | n | no stated answer | s/question | peak RSS MB | GFLOPs/question |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r.config["dataset"], r.config["system"])):
        c, run = row.config, row.runs[0]
        unparsed = sum(stated_answer(r) is None for r in run.records.values())
        out.append(f"| {c['system'].upper()} | {c['dataset']} | {c['split']} | {student_label(c)} | "
                   f"{len(row.runs)} | {row.n} | {unparsed} | {run.seconds_per_question():.1f} | "
                   f"{run.peak_rss_mb():.0f} | {run.flops_per_question() / 1e9:.1f} |")
    return out


def _families(rows: list[Row]) -> dict[tuple, dict[str, Row]]:
    """Rows that differ only in quantization: same system, data, teacher and trained modules."""
    families: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for row in rows:
        c = row.config
        names = tuple(sorted({m["name"] for m in c["models"].values()}))
        families[(c["system"], c["dataset"], c["split"], c["teacher"], names)][quant_mix(c)] = row
    return families


def quant_table(rows: list[Row]) -> list[str]:
    """Accuracy, agreement with f16, size and cost of each quantization of the same models."""
    out = ["## Quantization", "",
           "Answer agreement: share of questions where the answer (or the lack of one) equals the f16 run's.", "",
           "| system | dataset | student | quant | accuracy | agreement with f16 | file MB per module | bits/weight | "
           "peak RSS MB | s/question | generated tok/s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (system, dataset, _, _, names), by_quant in sorted(_families(rows).items()):
        student = ", ".join(sorted({name.split("/")[0] for name in names}))
        reference = by_quant.get("f16")
        for quant, row in sorted(by_quant.items(), key=lambda item: (item[0].count("="), item[0])):
            models = list(row.config["models"].values())
            agree = _agreement(reference, row) if reference else None
            sizes = _per_module(f"{m.get('size_bytes', 0) / 1e6:.0f}" for m in models)
            bits = _per_module(f"{m.get('bits_per_weight', 0):.2f}" for m in models)
            out.append(f"| {system.upper()} | {dataset} | {student} | {quant} | {row.cell()} | "
                       f"{'-' if agree is None else f'{100 * agree:.1f}%'} | {sizes} | {bits} | "
                       f"{row.runs[0].peak_rss_mb():.0f} | {row.runs[0].seconds_per_question():.1f} | "
                       f"{row.runs[0].generation_tokens_per_second():.1f} |")
    return out


def sensitivity_table(rows: list[Row]) -> list[str]:
    """One module quantized while the others keep the reference quant: which module is fragile."""
    lines = []
    for (system, dataset, *_), by_quant in sorted(_families(rows).items()):
        for mix, row in sorted(by_quant.items()):
            choice = QuantChoice.parse(mix)
            reference = by_quant.get(choice.default)
            if len(choice.per_role) != 1 or reference is None:
                continue
            [(role, quant)] = choice.per_role.items()
            default = choice.default
            common = set(reference.runs[0].records) & set(row.runs[0].records)
            if not common:
                continue
            delta = 100 * (_accuracy_on(row, common) - _accuracy_on(reference, common))
            agree = _agreement(reference, row)
            lines.append(f"| {system.upper()} | {dataset} | {role} | {default} -> {quant} | {row.cell()} | "
                         f"{delta:+.1f} (n={len(common)}) | {100 * agree:.1f}% | "
                         f"{row.runs[0].peak_rss_mb():.0f} |")
    if not lines:
        return []
    return ["## Per-module quantization sensitivity", "",
            "One module quantized, the others as in the reference run (all modules in the first quant); "
            "change in accuracy points and answer agreement with the reference, on the same questions.", "",
            "| system | dataset | module | quant | accuracy | change vs reference | agreement with reference | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|", *lines, ""]


def _per_module(values) -> str:
    values = list(values)
    return values[0] if len(set(values)) == 1 else "/".join(values)


def _accuracy_on(row: Row, ids: set[str]) -> float:
    records = row.runs[0].records
    return sum(bool(records[i]["correct"]) for i in ids) / len(ids)


def _agreement(reference: Row, row: Row) -> float | None:
    ref, other = reference.runs[0].records, row.runs[0].records
    common = set(ref) & set(other)
    if not common:
        return None
    return sum(ref[i]["answer"] == other[i]["answer"] for i in common) / len(common)
