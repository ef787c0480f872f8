"""The report's figures (matplotlib, imported only when drawing): accuracy against inference FLOPs
and against peak memory (the paper's Figure 2), and the learning curve."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .curve import CurvePanel, line_label
from .evaluate import wilson_interval
from .rows import Row, student_label


def plot_learning_curve(panels: list[CurvePanel], out_dir: Path) -> Path | None:
    """Accuracy vs training questions, one panel per dataset, levels as horizontal lines."""
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        n = len(panel.common)
        for key, xy in panel.lines.items():
            # the 95% Wilson interval of each point: at a few hundred questions it spans +-7 points
            bounds = [wilson_interval(round(y * n / 100), n) for _, y in xy]
            below = [y - 100 * low for (_, y), (low, _) in zip(xy, bounds)]
            above = [100 * high - y for (_, y), (_, high) in zip(xy, bounds)]
            # a lone point (another epoch count at one size) is drawn a little to the right of the
            # curve's point at that size, so that their intervals do not hide each other
            lone = len(xy) == 1
            ax.errorbar([x * (1.08 if lone else 1) for x, _ in xy], [y for _, y in xy], yerr=[below, above],
                        capsize=3, fmt="o-" if key[0] == "TMD" else "s--",
                        label=line_label(key) + (" (95% CI; drawn beside its size)" if lone else " (95% CI)"))
        styles = iter(["-.", ":", (0, (5, 1)), (0, (1, 2)), (0, (3, 1, 1, 1))])
        for label, y in panel.levels:
            ax.axhline(y, linestyle=next(styles, ":"), color="grey", label=f"{label}: {y:.1f}")
        letter, rate = panel.majority
        ax.axhline(rate, color="red", linewidth=1, label=f"majority class ({letter}): {rate:.1f}")
        ax.set_xscale("log")
        ax.set_title(f"{panel.dataset}: {len(panel.common)} test questions")
        ax.set_xlabel("training questions (teacher data)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "learning_curve.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


FIGURE_AXES = (("accuracy_vs_flops", "GFLOPs per question", lambda r: r.runs[0].flops_per_question() / 1e9),
               ("accuracy_vs_memory", "peak RSS (MiB)", lambda r: r.runs[0].peak_rss_mb()))


def plot(rows: list[Row], out_dir: Path) -> list[Path]:
    """Accuracy vs inference FLOPs and vs peak memory (the paper's Figure 2): one panel per dataset,
    one colour per student (bundle + quant), circles TMD, squares DRD, dotted lines join a pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.config["dataset"] for r in rows})
    students = sorted({student_label(r.config) for r in rows})
    colour = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(students)}
    made = []
    for name, xlabel, x_of in FIGURE_AXES:
        fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets) + 2.6, 4), squeeze=False)
        for ax, dataset in zip(axes[0], datasets):
            _plot_panel(ax, [r for r in rows if r.config["dataset"] == dataset], x_of, colour)
            ax.set_title(dataset)
            ax.set_xlabel(xlabel)
        axes[0][0].set_ylabel("accuracy (%)")
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour[s], label=s) for s in students]
        handles += [plt.Line2D([], [], marker=m, linestyle="", color="black", markerfacecolor="none", label=label)
                    for m, label in (("o", "TMD"), ("s", "DRD"), ("^", "other (mc, tmd-gold-*)"))]
        fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        made.append(path)
    return made


SYSTEM_MARKERS = {"tmd": "o", "drd": "s"}


def _plot_panel(ax, rows: list[Row], x_of, colour: dict) -> None:
    pairs: dict[tuple, dict[str, tuple]] = defaultdict(dict)
    for row in rows:
        c = row.config
        point = (x_of(row), 100 * row.accuracy()[0])
        ax.scatter(*point, marker=SYSTEM_MARKERS.get(c["system"], "^"), color=colour[student_label(c)])
        pairs[(c["teacher"], student_label(c))][c["system"]] = point
    for systems in pairs.values():
        if {"tmd", "drd"} <= set(systems):
            (x1, y1), (x2, y2) = systems["tmd"], systems["drd"]
            ax.plot([x1, x2], [y1, y2], linestyle=":", color="grey")
