"""`tmd report`: the Markdown report (tables and plots, every figure labelled) from evaluation
results, and the marked figures sections of results documents (README.md, docs/RESULTS.md). The rows
come from tmd_local.evaluation.rows, the tables from tmd_local.evaluation.tables, tmd_local.evaluation.comparisons and
tmd_local.evaluation.curve, the figures from tmd_local.evaluation.plots.

The checkout's published places (its reports/ and docs/ folders and its top-level files, such as
README.md) are the project's record: a report is written there only when asked with publish=True
(`tmd report --publish`). By default a report goes to the user's own results folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..core import paths
from ..core.errors import TmdError
from .comparisons import error_source_table, reasoning_worth_table, tmd_vs_drd_table
from .curve import CurvePanel, learning_curve, learning_curve_table
from .plots import plot, plot_learning_curve
from .rows import (
    Row,
    dataset_label,
    fold_seeds,
    load_results,
    student_label,
    training_label,
    tuned_label,
)
from .tables import (
    accuracy_table,
    detail_table,
    majority_lines,
    quant_table,
    sensitivity_table,
)


def render_markdown(rows: list[Row], sources: list[Path], plots: list[Path], unscored: int = 0,
                    panels: Sequence[CurvePanel] = ()) -> str:
    lines = ["# tmd evaluation report", "",
             f"From {', '.join(str(p) for p in sources)}. Accuracy in %, mean ± std over seeds where "
             "several were run, with the 95% Wilson interval over all answers. The answer is the option "
             "the module finds most probable after its reasoning (mc: option log-likelihood); 'stated' "
             "figures count only answers the reasoning states itself.", ""]
    if unscored:
        lines += [f"Not scored: {unscored} answers to questions whose data gives no gold answer "
                  "(they count in no accuracy).", ""]
    lines += majority_lines(rows) + [""]
    lines += accuracy_table(rows) + [""] + detail_table(rows) + [""] + quant_table(rows) + [""]
    lines += sensitivity_table(rows) + learning_curve_table(panels) + error_source_table(rows)
    lines += tmd_vs_drd_table(rows) + reasoning_worth_table(rows)
    for image in plots:
        lines.append(f"![{image.stem}]({image.name})")
    lines += ["", "FLOPs per question = sum over stages of 2 x parameters x (prompt + generated tokens)."]
    return "\n".join(lines) + "\n"


# Where the report goes unless told: the user's own results folder ($TMD_HOME/results, else ./results).
DEFAULT_REPORT_NAME = "report.md"
PUBLISHED_FOLDERS = ("reports", "docs")  # in the checkout, besides its top-level files (README.md)
SECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def default_out() -> Path:
    return paths.results_dir() / DEFAULT_REPORT_NAME


def markers(section: str | None = None) -> tuple[str, str]:
    """The pair of comments around a generated section: '<!-- tmd report: begin -->' unnamed,
    '<!-- tmd report: begin NAME -->' for a named one, so one document can hold several."""
    suffix = f" {section}" if section else ""
    return f"<!-- tmd report: begin{suffix} -->", f"<!-- tmd report: end{suffix} -->"


def check_section_name(section: str | None) -> None:
    if section is not None and not SECTION_NAME.fullmatch(section):
        raise TmdError(f"--section {section!r}: expected letters, digits, '.', '_' or '-' (e.g. obqa-validation)")


def published_place(path: Path) -> str | None:
    """What of the checkout's published record `path` would write, e.g. 'reports/' or 'README.md';
    None for anywhere else. The checkout is where tmd_local lives (paths.CODE_ROOT), read at call time."""
    try:
        root = Path(os.path.realpath(paths.CODE_ROOT))
        target = Path(os.path.realpath(path))
    except (OSError, ValueError):  # a name no file can have: the output checks say why
        return None
    if target.parent == root:
        return target.name
    for folder in PUBLISHED_FOLDERS:
        if target.is_relative_to(root / folder):
            return f"{folder}/"
    return None


def check_publish(out: Path, docs: Sequence[Path] = (), publish: bool = False) -> None:
    """Refuse, before anything is written, to rewrite the project's published reports or documents
    unless asked (--publish): a user's `tmd report` goes to their own results folder."""
    if publish:
        return
    for flag, path in [("--out", out), *(("--results-doc", doc) for doc in docs)]:
        place = published_place(path)
        if place is None:
            continue
        where = f"in the checkout's published {place}" if place.endswith("/") else f"the checkout's published {place}"
        if flag == "--out":
            raise TmdError(f"--out {path}: is {where} (the project's own report); pass --publish to rewrite it, "
                           f"or omit --out to write {default_out()}")
        raise TmdError(f"--results-doc {path}: is {where} (the project's own figures); pass --publish to rewrite it")


def check_request(out: Path, docs: Sequence[Path] = (), section: str | None = None,
                  publish: bool = False) -> None:
    """Everything that could refuse a report, checked before anything is written: the section's
    name, the checkout's published places without `publish`, a document without its markers."""
    check_section_name(section)
    if section is not None and not docs:
        raise TmdError(f"--section {section}: names a section of a results document; give --results-doc PATH")
    check_publish(out, docs, publish)
    for doc in docs:
        read_marked(doc, section)


def read_marked(doc: Path, section: str | None = None) -> tuple[str, str]:
    """The document's text before its section's begin marker and after its end marker; an error
    unless the document holds exactly one pair of them, in order."""
    begin, end = markers(section)
    try:
        text = doc.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TmdError(f"{doc}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    found = (text.count(begin), text.count(end))
    if found != (1, 1) or text.index(begin) > text.index(end):
        named = f"section {section!r}" if section else "the unnamed section"
        raise TmdError(f"{doc}: expected exactly one pair of markers {begin!r} ... {end!r} for {named} "
                       f"(found {found[0]} begin, {found[1]} end)")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return head, tail


def readme_table(rows: list[Row], report_path: Path, sources: list[Path], flags: str = "") -> list[str]:
    """The headline figures for a results document: every configuration, labelled with what produced
    it; `flags` are the command's other options, quoted in the 'generated by' line."""
    out = [f"<!-- generated by `tmd report {' '.join(map(str, sources))} --out {report_path}{flags}`; "
           "edits here are overwritten -->",
           f"Full report with plots: {report_path}. Accuracy in % with the 95% Wilson interval: the option "
           "the module finds most probable after its reasoning (mc: by option log-likelihood). Stated: "
           "accuracy counting only answers the reasoning itself states, and the share of questions "
           "where it states one. Seconds and memory measured on this machine.", "",
           *majority_lines(rows), "",
           "| dataset | system | student (quant) | teacher | fine-tuned (train questions, epochs) | n | "
           "accuracy (95% CI) | stated accuracy | stated share | s/question | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = lambda r: (r.config["dataset"], r.config["split"] != "test", tuned_label(r.config) == "none (zero-shot)",
                       r.config["system"], student_label(r.config))
    for row in sorted(rows, key=order):
        c, run = row.config, row.runs[0]
        mean, _ = row.accuracy()
        low, high = row.ci95()
        stated = (f"{100 * run.stated_accuracy():.1f}", f"{100 * run.stated_share():.0f}%")
        norm = run.norm_accuracy()  # only the mc systems score options without a reasoning
        if norm is not None:
            stated = (f"- (acc_norm {100 * norm:.1f})", "-")
        dataset = dataset_label(c["dataset"], c["split"])
        out.append(f"| {dataset} | {c['system'].upper()} | {student_label(c)} | {c['teacher']} | "
                   f"{training_label(c)} | {row.n} | {100 * mean:.1f} ({100 * low:.0f}-{100 * high:.0f}) | "
                   f"{stated[0]} | {stated[1]} | {run.seconds_per_question():.1f} | {run.peak_rss_mb():.0f} |")
    return out


def update_results_doc(doc: Path, rows: list[Row], report_path: Path, sources: list[Path],
                       section: str | None = None, flags: str = "") -> None:
    """Replace the document's marked section with the figures just computed (nothing edited by hand)."""
    from ..core.jsonl import write_text_atomic

    begin, end = markers(section)
    head, tail = read_marked(doc, section)
    write_text_atomic(doc, head + begin + "\n" + "\n".join(readme_table(rows, report_path, sources, flags)) + "\n"
                      + end + tail)


def write_report(result_paths: list[Path], out: Path | None = None, results_docs: Sequence[Path] = (),
                 section: str | None = None, publish: bool = False) -> Path:
    """The report at `out` (default: results/report.md under the tmd home) with its plots beside it,
    and the marked section of each results document rewritten. Everything that could refuse (the
    checkout's published places without `publish`, a document without its markers) is checked
    before anything is written."""
    from ..core.jsonl import check_output_file, write_text_atomic

    out = default_out() if out is None else out
    check_request(out, results_docs, section, publish)
    check_output_file(out, "--out")  # after the --publish check: probing it must not touch reports/
    results = load_results(result_paths)
    rows = fold_seeds(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = plot(rows, out.parent) if rows else []
    panels = learning_curve(rows)
    curve = plot_learning_curve(panels, out.parent)
    plots += [curve] if curve else []
    unscored = sum(len(r.unscored) for r in results)
    write_text_atomic(out, render_markdown(rows, result_paths, plots, unscored, panels))
    for doc in results_docs:
        flags = (f" --results-doc {doc}" + (f" --section {section}" if section else "")
                 + (" --publish" if publish else ""))
        update_results_doc(doc, rows, out, result_paths, section, flags)
    return out
