"""Rich renderings of traces and summaries for the terminal."""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..core.display import markup_safe, visible
from .pipeline import MC_SYSTEMS, Trace


def trace_view(trace: Trace) -> Group:
    q = trace.question
    # Everything quoted from the question, the data or the model is shown, never obeyed: no markup,
    # and control characters (ANSI escapes) as visible escapes.
    parts = [Panel(Text(visible(q.question + "\n\n" + "\n".join(f"{k}. {v}" for k, v in q.options.items()))),
                   title=f"[b]{trace.system.upper()}[/b] question {markup_safe(q.id, True)}", border_style="cyan")]
    if trace.system == "tmd":
        parts.append(_knowledge_table(trace))
    if trace.system not in MC_SYSTEMS:
        parts.append(Panel(Text(visible(trace.reasoning or "(no output)")), title="Reasoning", border_style="blue"))
    parts.append(_answer_line(trace))
    if trace.option_probs:
        parts.append(option_bars(trace))
    for warning in trace.warnings:
        parts.append(Text(visible(f"warning: {warning}"), style="yellow"))
    parts.append(stage_table(trace))
    return Group(*parts)


def _knowledge_table(trace: Trace) -> Table:
    table = Table(title="Subquestions and knowledge", show_lines=True, expand=True)
    table.add_column("#", width=2)
    table.add_column("Subquestion (Analyzer)", ratio=1)
    table.add_column("Knowledge (Informant)", ratio=2)
    if not trace.subquestions:
        table.add_row("-", "No decomposition", "-")
    for i, (sq, kn) in enumerate(zip(trace.subquestions, trace.knowledge), start=1):
        table.add_row(str(i), Text(visible(sq)), Text(visible(kn)))
    return table


def _answer_line(trace: Trace) -> Text:
    q = trace.question
    if trace.answer is None:
        chosen = Text("Answer: none could be parsed from the output", style="bold red")
    else:
        chosen = Text(visible(f"Answer: {trace.answer}. {q.options[trace.answer]}"), style="bold green")
        chosen.append(f"  [{answer_provenance(trace)}]", style="dim")
    if trace.correct is not None:
        mark = "correct" if trace.correct else f"wrong, gold {q.answer}. {q.options[q.answer]}"
        chosen.append(visible(f"  ({mark})"), style="green" if trace.correct else "red")
    return chosen


def answer_provenance(trace: Trace) -> str:
    """Where the answer came from, in words: stated by the reasoning, or read from probabilities."""
    if trace.system in MC_SYSTEMS:
        return "log-likelihood of each option's text"
    if trace.answer_source == "stated":
        return "stated in the reasoning, and the most probable option"
    stated = f"it stated {trace.stated_answer}" if trace.stated_answer else "it stated no option"
    return f"most probable option after 'Final Answer:'; {stated}"


def option_bars(trace: Trace, width: int = 30) -> Table:
    """One bar per option: the probability the module gives it."""
    table = Table(show_header=False, box=None, padding=(0, 1))
    for letter, p in trace.option_probs.items():
        bar = "█" * round(p * width)
        style = "green" if letter == trace.answer else "white"
        table.add_row(f"P({letter})", Text(bar.ljust(width, "·"), style=style), f"{100 * p:5.1f}%")
    return table


def stage_table(trace: Trace) -> Table:
    models = ", ".join(sorted({f"{s.model} ({s.file_type})" for s in trace.stages.values()}))
    table = Table(title="Stages", title_justify="left", caption=f"model: {markup_safe(models)}",
                  caption_justify="left")
    for col in ("stage", "calls", "load s", "gen s", "in tok", "out tok", "tok/s", "peak MB"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in trace.stages.values():
        table.add_row(markup_safe(s.stage), str(s.calls), f"{s.load_seconds:.2f}", f"{s.seconds:.2f}",
                      str(s.prompt_tokens), str(s.completion_tokens), f"{s.tokens_per_second:.1f}",
                      f"{s.peak_rss_mb:.0f}")
    return table


def summary_table(summaries: list[dict]) -> Table:
    """Accuracy per configuration; what produced the numbers goes in the caption, once per label."""
    table = Table(title="Accuracy", title_justify="left")
    for col in ("system", "dataset", "n", "acc", "95% CI", "stated acc", "stated", "s/q", "peak MB"):
        table.add_column(col, justify="left" if col in ("system", "dataset") else "right",
                         no_wrap=True)
    labels = []
    for s in summaries:
        c = s["config"]
        low, high = s["ci95"]
        scored = s["n"] > 0
        table.add_row(c["system"].upper(), f"{c['dataset']}/{c['split']}", str(s["n"]),
                      f"{100 * s['accuracy']:.1f}%" if scored else "-",
                      f"{100 * low:.0f}-{100 * high:.0f}%" if scored else "-",
                      *(_stated_cells(s) if scored else ("-", "-")),
                      f"{s['seconds_per_question']:.1f}", f"{s['peak_rss_mb']:.0f}")
        models = ", ".join(sorted({f"{m['file']} ({m.get('file_type', '?')})" for m in c["models"].values()}))
        label = markup_safe(f"student: {models}; teacher: {c['teacher']}; seed {c['settings']['seed']}")
        if s.get("unscored"):
            label += (f"\n{c['system'].upper()} {c['dataset']}: {s['unscored']} answered questions have no gold "
                      "answer and are not scored (n counts scored questions only)")
        if label not in labels:
            labels.append(label)
    table.caption = "\n".join(labels + ["acc: the most probable option after the reasoning (mc: acc "
                                          "by summed log-likelihood); stated acc: only answers the "
                                          "reasoning states, the share of which is 'stated'"])
    table.caption_justify = "left"
    return table


def _stated_cells(summary: dict) -> tuple[str, str]:
    if summary["config"]["system"] in MC_SYSTEMS:
        norm = summary.get("accuracy_norm")
        return (f"norm {100 * norm:.1f}%" if norm is not None else "-"), "-"
    return f"{100 * summary['stated_accuracy']:.1f}%", f"{100 * summary['stated_share']:.0f}%"
