"""`tmd report`: Markdown tables and plots from evaluation results, every figure labelled.

Inference FLOPs are estimated as 2 x parameters x tokens processed (prompt + generated), summed over
the stages of a question: the usual forward-pass cost of a dense decoder, ignoring attention's
context-length term (small at these lengths) and the saving of the KV cache.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .evaluate import wilson_interval
from .jsonl import read_jsonl


@dataclass
class ConfigResult:
    """All questions answered under one configuration (one seed)."""
    key: str
    config: dict
    records: dict[str, dict] = field(default_factory=dict)  # question id -> result line

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def accuracy(self) -> float:
        return sum(bool(r["correct"]) for r in self.records.values()) / self.n

    def mean(self, value) -> float:
        return statistics.fmean(value(r) for r in self.records.values())

    def flops_per_question(self) -> float:
        return self.mean(lambda r: sum(2 * self._params(stage) * (s["prompt_tokens"] + s["completion_tokens"])
                                       for stage, s in r["stages"].items()))

    def _params(self, stage: str) -> int:
        return self.config["models"].get(stage, {}).get("params", 0)

    def peak_rss_mb(self) -> float:
        return max(s["peak_rss_mb"] for r in self.records.values() for s in r["stages"].values())

    def seconds_per_question(self) -> float:
        return self.mean(lambda r: r.get("wall_seconds", 0.0))


def load_results(paths: list[Path]) -> list[ConfigResult]:
    by_key: dict[str, ConfigResult] = {}
    for path in paths:
        for record in read_jsonl(path, repair=False):
            result = by_key.setdefault(record["config_key"], ConfigResult(record["config_key"], record["config"]))
            result.records[record["id"]] = record
    return list(by_key.values())


def student_label(config: dict) -> str:
    """'smollm2-135m-instruct q4_1' or, for mixed modules, each role's file."""
    files = {f"{m['name']} {m.get('file_type', '?')}" for m in config["models"].values()}
    return " + ".join(sorted(files))


def tuned_label(config: dict) -> str:
    """Which roles are fine-tuned (the paper's Table 3 ablation); zero-shot roles have no mode."""
    tuned = [role for role, m in config["models"].items() if m.get("mode") in ("merged", "adapter")]
    return ", ".join(tuned) if tuned else "none (zero-shot)"


def seed_group_key(config: dict) -> tuple:
    settings = {k: v for k, v in config["settings"].items() if k != "seed"}
    models = tuple(sorted((role, m["sha256"]) for role, m in config["models"].items()))
    return (config["system"], config["dataset"], config["split"], config["teacher"], models,
            repr(sorted(settings.items())))


@dataclass
class Row:
    """Seeds of one configuration folded together: mean and std of accuracy across seeds."""
    runs: list[ConfigResult]

    @property
    def config(self) -> dict:
        return self.runs[0].config

    @property
    def n(self) -> int:
        return min(r.n for r in self.runs)

    def accuracy(self) -> tuple[float, float]:
        values = [r.accuracy for r in self.runs]
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    def ci95(self) -> tuple[float, float]:
        correct = sum(sum(bool(x["correct"]) for x in r.records.values()) for r in self.runs)
        return wilson_interval(correct, sum(r.n for r in self.runs))

    def cell(self) -> str:
        mean, std = self.accuracy()
        low, high = self.ci95()
        spread = f" ± {100 * std:.1f}" if len(self.runs) > 1 else ""
        return f"{100 * mean:.1f}{spread} (n={self.n}, CI {100 * low:.0f}-{100 * high:.0f})"


def fold_seeds(results: list[ConfigResult]) -> list[Row]:
    groups: dict[tuple, list[ConfigResult]] = defaultdict(list)
    for result in results:
        groups[seed_group_key(result.config)].append(result)
    return [Row(runs) for runs in groups.values()]


def render_markdown(rows: list[Row], sources: list[Path], plots: list[Path]) -> str:
    lines = ["# tmd evaluation report", "",
             f"From {', '.join(str(p) for p in sources)}. Accuracy in %, mean ± std over seeds where "
             "several were run, with the 95% Wilson interval over all answers. Unparsed answers count "
             "as wrong.", ""]
    lines += _accuracy_table(rows) + [""] + _detail_table(rows) + [""] + _quant_table(rows) + [""]
    for plot in plots:
        lines.append(f"![{plot.stem}]({plot.name})")
    lines += ["", "FLOPs per question = sum over stages of 2 x parameters x (prompt + generated tokens)."]
    return "\n".join(lines) + "\n"


def _accuracy_table(rows: list[Row]) -> list[str]:
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


def _detail_table(rows: list[Row]) -> list[str]:
    out = ["## Cost per question", "",
           "| system | dataset | split | student | seeds | n | unparsed | s/question | peak RSS MB | GFLOPs/question |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r.config["dataset"], r.config["system"])):
        c, run = row.config, row.runs[0]
        unparsed = sum(r["answer"] is None for r in run.records.values())
        out.append(f"| {c['system'].upper()} | {c['dataset']} | {c['split']} | {student_label(c)} | "
                   f"{len(row.runs)} | {row.n} | {unparsed} | {run.seconds_per_question():.1f} | "
                   f"{run.peak_rss_mb():.0f} | {run.flops_per_question() / 1e9:.1f} |")
    return out


def _quant_table(rows: list[Row]) -> list[str]:
    """Same system, data and models except for quantization: accuracy and agreement with f16."""
    families: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for row in rows:
        c = row.config
        quants = {m.get("file_type") for m in c["models"].values()}
        quant = quants.pop() if len(quants) == 1 else "mixed"
        names = tuple(sorted({m["name"] for m in c["models"].values()}))
        families[(c["system"], c["dataset"], c["split"], c["teacher"], names)][quant] = row
    out = ["## Quantization", "",
           "| system | dataset | quant | accuracy | agreement with f16 | file MB | bits/weight | peak RSS MB | s/question |",
           "|---|---|---|---|---|---|---|---|---|"]
    for (system, dataset, _, _, _), by_quant in sorted(families.items()):
        reference = by_quant.get("f16")
        for quant, row in sorted(by_quant.items()):
            m = next(iter(row.config["models"].values()))
            agree = _agreement(reference, row) if reference else None
            out.append(f"| {system.upper()} | {dataset} | {quant} | {row.cell()} | "
                       f"{'-' if agree is None else f'{100 * agree:.1f}%'} | {m.get('size_bytes', 0) / 1e6:.0f} | "
                       f"{m.get('bits_per_weight', 0):.2f} | {row.runs[0].peak_rss_mb():.0f} | "
                       f"{row.runs[0].seconds_per_question():.1f} |")
    return out


def _agreement(reference: Row, row: Row) -> float | None:
    ref, other = reference.runs[0].records, row.runs[0].records
    common = set(ref) & set(other)
    if not common:
        return None
    return sum(ref[i]["answer"] == other[i]["answer"] for i in common) / len(common)


def plot(rows: list[Row], out_dir: Path) -> list[Path]:
    """Accuracy vs inference FLOPs and vs peak memory (the paper's Figure 2), TMD/DRD pairs joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for name, xlabel, x_of in (("accuracy_vs_flops", "GFLOPs per question", lambda r: r.runs[0].flops_per_question() / 1e9),
                               ("accuracy_vs_memory", "peak RSS (MB)", lambda r: r.runs[0].peak_rss_mb())):
        fig, ax = plt.subplots(figsize=(6, 4))
        pairs: dict[tuple, dict[str, tuple]] = defaultdict(dict)
        for row in rows:
            c = row.config
            point = (x_of(row), 100 * row.accuracy()[0])
            marker = "o" if c["system"] == "tmd" else "s"
            ax.scatter(*point, marker=marker, label=f"{c['system'].upper()} {c['dataset']} {student_label(c)}")
            pairs[(c["dataset"], c["teacher"], student_label(c))][c["system"]] = point
        for systems in pairs.values():
            if {"tmd", "drd"} <= set(systems):
                (x1, y1), (x2, y2) = systems["tmd"], systems["drd"]
                ax.plot([x1, x2], [y1, y2], linestyle=":", color="grey")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_title("TMD (circles) vs DRD (squares); dotted: same data and student")
        ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        made.append(path)
    return made


def write_report(result_paths: list[Path], out: Path) -> Path:
    from .jsonl import write_text_atomic

    rows = fold_seeds(load_results(result_paths))
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = plot(rows, out.parent) if rows else []
    write_text_atomic(out, render_markdown(rows, result_paths, plots))
    return out
