"""The `tmd` command group: the runtime's own commands (ask, demo, eval, report, models) and each
stage's command, imported from its package (teach, train, export, app, serve).

Imports point down only: the stages' command modules import their options and consoles from
tmd_local (cli_options, run_options, console), never this module. Every module imported here keeps
torch, transformers, llama.cpp and Textual out of its top level, so `tmd --help` stays fast.
Library errors (TmdError) become one line on stderr and exit status 1 (tmd_local/terminal/console.py)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import click

from exporter.cli import export
from teacher.cli import teach
from trainer.cli import train

from .core.display import markup_safe
from .core.errors import TmdError
from .core.paths import results_dir
from .runtime.pipeline import SYSTEMS
from .serve.cli import serve
from .terminal.console import console, err_console, one_line_errors, say, warn
from .terminal.options import TEMPERATURE, TEXT, count
from .terminal.runtime_options import (
    build_runtime,
    build_settings,
    context_options,
    generation_options,
    model_option,
    runtime_options,
)
from .tui.cli import app


@click.group()
@click.version_option(package_name="tmd")
def cli():
    """tmd: small models reasoning in three modules (Analyzer, Informant, Reasoner), offline."""


@cli.command()
@click.argument("question", type=TEXT)
@click.option("--option", "options", type=TEXT, multiple=True, metavar="LETTER=TEXT",
              help="An answer option, e.g. --option A='a marsh'. Repeat for each option.")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
@click.option("--zero-shot", is_flag=True,
              help="Run the base model itself, not the shipped distilled students (used for four-option questions).")
@generation_options
@runtime_options
@one_line_errors
def ask(question, options, as_json, zero_shot, model, system, n_ctx, threads, temperature, seed, bundle, quant,
        max_memory, memory_budget, results_paths, keep_loaded):
    """Answer one QUESTION and show the whole trace."""
    from .core.records import Question

    q = Question("cli", parse_question_text(question), parse_option_flags(options))
    bundle = default_bundle(q, model, bundle, zero_shot, quiet=as_json)
    settings = build_settings(n_ctx, threads, temperature, seed)
    modules, pool, _ = build_runtime(model, bundle, quant, max_memory, keep_loaded, settings, systems=(system,),
                                     memory_budget=memory_budget, results_paths=results_paths)
    with pool:
        trace = _run_with_status(system, [q], modules, settings, quiet=as_json, pool=pool)[0]
    if as_json:
        click.echo(json.dumps(trace.to_dict(), indent=2, ensure_ascii=False))
    else:
        from .runtime.render import trace_view
        console.print(trace_view(trace))


def default_bundle(q, model, bundle, zero_shot: bool, quiet: bool = False):
    """The shipped distilled OBQA students for a four-option question asked of the default model,
    unless a bundle or --zero-shot was given."""
    from .runtime.shipped import shipped_default, suits

    shipped = shipped_default(model, bundle, zero_shot)
    if shipped is None or not suits(q.options):
        return bundle
    if not quiet:
        err_console.print(f"[dim]four options: the shipped distilled students ({shipped.name}); "
                          "--zero-shot runs the base model instead[/dim]")
    return str(shipped)


def parse_question_text(question: str) -> str:
    """The question as the modules get it; empty or blank is refused (the model would answer it)."""
    if not question.strip():
        raise TmdError("QUESTION: expected the question's text, got an empty one")
    return question.strip()


def parse_option_flags(options: tuple[str, ...]) -> dict[str, str]:
    import string

    if len(options) < 2:
        raise TmdError("--option: expected at least two, e.g. --option A='yes' --option B='no'")
    parsed = {}
    for item in options:
        letter, sep, text = item.partition("=")
        letter = letter.strip().upper()
        # A-Z only: the prompts, the answer parser and the letter tokens know no other keys (an
        # option keyed α could never be parsed as the answer).
        if not sep or len(letter) != 1 or letter not in string.ascii_uppercase or not text.strip():
            raise TmdError(f"--option {item!r}: expected LETTER=TEXT with a letter A-Z, e.g. A='a marsh'")
        if letter in parsed:
            raise TmdError(f"--option {letter}: given twice")
        parsed[letter] = text.strip()
    return parsed


def _run_with_status(system, questions, modules, settings, quiet=False, pool=None):
    from .runtime.pipeline import Events, run

    class StatusEvents(Events):
        def __init__(self, status):
            self.status = status

        def stage_started(self, stage, model):
            self.status.update(f"[cyan]{stage}[/cyan]: loading {markup_safe(model.name, True)} and generating...")

    if quiet:
        return run(system, questions, modules, settings, pool=pool)
    with console.status("starting...") as status:
        return run(system, questions, modules, settings, StatusEvents(status), pool=pool)


@cli.command()
@generation_options
@one_line_errors
def demo(model, system, n_ctx, threads, temperature, seed):
    """Answer a few built-in questions with the embedded model and show every stage."""
    from .core.demo import DEMO_QUESTIONS
    from .core.registry import resolve_model
    from .runtime.pipeline import ModuleSet
    from .runtime.render import trace_view

    ref = resolve_model(model)
    console.print(f"[b]tmd demo[/b]: {system.upper()} pipeline, every module = {markup_safe(ref.name)} "
                  f"({markup_safe(ref.path.name)}), zero-shot (no fine-tuning), greedy decoding, one module in "
                  "memory at a time.\n")
    modules = ModuleSet.single(ref)
    settings = build_settings(n_ctx, threads, temperature, seed)
    zero_shot = {}
    for q in DEMO_QUESTIONS:
        trace = _run_with_status(system, [q], modules, settings)[0]
        console.print(trace_view(trace))
        console.rule()
        zero_shot[q.id] = trace
    correct = sum(bool(t.correct) for t in zero_shot.values())
    console.print(f"{correct}/{len(DEMO_QUESTIONS)} demo questions answered correctly by the zero-shot "
                  f"{markup_safe(ref.name)}. Three questions say nothing about accuracy: see `tmd eval`.\n")
    _demo_distilled(system, zero_shot, settings)


def _demo_distilled(system, zero_shot, settings) -> None:
    """The shipped distilled students on the demo's four-option questions, beside the zero-shot answers,
    with the accuracy measured for them and what produced it."""
    from rich.table import Table

    from .core.demo import DEMO_QUESTIONS
    from .runtime.bundle import load_bundle
    from .runtime.render import trace_view
    from .runtime.shipped import measured_lines, shipped_bundle, suits

    folder = shipped_bundle()
    if folder is None:
        console.print("[dim]No distilled students ship with this install (models/openbook-135m).[/dim]")
        return
    bundle = load_bundle(folder)
    modules = bundle.module_set()
    info = bundle.info
    console.rule(f"[b]Distilled students ({folder.name})[/b]")
    console.print(f"LoRA adapters over the same {markup_safe(bundle.base)} GGUF; teacher {info.get('teacher')}, "
                  "OpenBookQA train questions; every figure: README (OpenBookQA) and reports/obqa/report.md.")
    for line in measured_lines(bundle):
        console.print(f"  measured: {line}")
    table = Table(title=f"{system.upper()}: zero-shot vs distilled")
    for col in ("question", "gold", "zero-shot", "distilled"):
        table.add_column(col)
    for q in [q for q in DEMO_QUESTIONS if suits(q.options)]:
        trace = _run_with_status(system, [q], modules, settings)[0]
        console.print(trace_view(trace))
        before = zero_shot[q.id]
        table.add_row(q.question, q.answer, _demo_cell(before), _demo_cell(trace))
    console.print(table)


def _demo_cell(trace) -> str:
    mark = "right" if trace.correct else "wrong"
    return f"{trace.answer or '-'} ({mark})"


@cli.command(name="eval")
@click.option("--dataset", "datasets", type=click.Choice(["obqa", "strategyqa", "medqa"]), multiple=True,
              required=True, help="Repeat for several datasets.")
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default="test", show_default=True)
@click.option("--limit", type=count(1), default=None, help="First N questions of the split (after --offset).")
@click.option("--offset", type=count(0), default=0, show_default=True,
              help="Skip the split's first N questions (e.g. a held-out tail of train).")
@click.option("--system", "systems", type=click.Choice(list(SYSTEMS)), multiple=True,
              help="Repeat for several systems (default: tmd). mc: option log-likelihood, no reasoning; "
                   "tmd-gold-subq / tmd-gold-facts: the gold subquestions (and facts) replace the "
                   "Analyzer (and Informant), to show where TMD's errors come from; mc-gold-facts: "
                   "mc with the gold facts before the question.")
@click.option("--seeds", type=count(1, 1000), default=1, show_default=True,
              help="Sampling seeds 0..N-1 (needs --temperature > 0); accuracy is reported as mean ± std.")
@click.option("--data-path", type=click.Path(path_type=Path), default=None,
              help="A question file (normalized JSONL or the benchmark's original format).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with <dataset>/<split>.jsonl (default: $TMD_DATA_DIR or ../shared/data).")
@click.option("--strict", is_flag=True, help="Reject the data file at its first malformed record.")
@click.option("--out", type=click.Path(path_type=Path), default=lambda: results_dir() / "eval.jsonl",
              help="Results JSONL, one line per question per configuration. Reruns resume.  "
                   "[default: results/eval.jsonl, in $TMD_HOME if set]")
@click.option("--batch-size", type=count(1, 10_000), default=10, show_default=True,
              help="Questions per stage batch: each module loads once per batch and evaluates the "
                   "prompt start its prompts share once; results are written batch by batch.")
@model_option
@context_options
@click.option("--temperature", type=TEMPERATURE, default=0.0, show_default=True, help="0 = greedy.")
@runtime_options(several_bundles=True)
@one_line_errors
def eval_cmd(datasets, split, limit, offset, systems, seeds, data_path, data_dir, strict, out, batch_size, model,
             n_ctx, threads, temperature, bundles, quant, max_memory, memory_budget, results_paths, keep_loaded):
    """Accuracy of systems on benchmark splits, with 95% confidence intervals."""
    from .core.datasets import load_questions
    from .core.jsonl import check_output_file, write_json_atomic
    from .evaluation.evaluate import run_config
    from .runtime.render import summary_table

    if seeds > 1 and temperature == 0:
        raise TmdError(f"--seeds {seeds}: greedy decoding (--temperature 0) gives the same answers for "
                       "every seed; set --temperature > 0 or use --seeds 1")
    if data_path and len(datasets) > 1:
        raise TmdError("--data-path: give one --dataset with it")
    summary_path = out.with_suffix(".summary.json")
    check_output_file(out, "--out")  # before any model is loaded or question asked
    check_output_file(summary_path, "--out (its summary)")
    from .core.results import read_results

    read_results(out, repair=True)  # a results file to resume, or refused now (another kind, damaged)
    runtimes = [build_runtime(model, bundle, quant, max_memory, keep_loaded,
                              build_settings(n_ctx, threads, temperature, 0), systems=systems or ("tmd",),
                              memory_budget=memory_budget, results_paths=results_paths)
                for bundle in bundles or (None,)]  # every bundle is checked before anything runs
    summaries = []
    for dataset in datasets:
        questions, report = load_questions(dataset, split, path=data_path, data_dir=data_dir,
                                           strict=strict, limit=limit, offset=offset)
        for line in report.warnings():
            warn(line)
        for (modules, pool, source), system in itertools.product(runtimes, systems or ("tmd",)):
            for seed in range(seeds):
                settings = build_settings(n_ctx, threads, temperature, seed)
                asked = {"source": report.source, "limit": limit, "n": len(questions),
                         **({"offset": offset} if offset else {})}
                config = run_config(system, modules, settings, dataset=dataset, split=split,
                                    source=source, questions=asked)
                with pool:  # closes what --keep-loaded kept once this configuration is done
                    summary = _evaluate_with_progress(questions, system, modules, settings, config, out,
                                                      batch_size, pool)
                summaries.append(summary.to_dict())
    write_json_atomic(summary_path, summaries)
    console.print(summary_table(summaries))
    say(f"results: {out}  summary: {summary_path}  (make a report: tmd report {out})")


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              show_default="results/report.md under $TMD_HOME, else under the working directory",
              help="The report; its plots go beside it.")
@click.option("--results-doc", "results_docs", multiple=True, type=click.Path(path_type=Path),
              help="Also rewrite the marked figures section of this Markdown document (repeatable).")
@click.option("--readme", "readme_docs", multiple=True, type=click.Path(path_type=Path), hidden=True)
@click.option("--section", default=None, metavar="NAME",
              help="Rewrite the section between <!-- tmd report: begin NAME --> and <!-- tmd report: end NAME -->"
                   " (default: the unnamed markers).")
@click.option("--publish", is_flag=True,
              help="Allow writing into the checkout's published reports/, docs/ and README.md.")
@one_line_errors
def report(results, out, results_docs, readme_docs, section, publish):
    """Markdown report (tables and plots) from one or more results JSONL files."""
    from .core.jsonl import check_output_file, require_regular_file
    from .evaluation.report import write_report

    docs = list(dict.fromkeys([*results_docs, *readme_docs]))
    for path in results:
        if not path.exists():
            raise TmdError(f"{path}: no such results file")
        require_regular_file(path, "results file")
    for doc in docs:
        if not doc.exists():
            raise TmdError(f"--results-doc {doc}: no such file")
        require_regular_file(doc, "results document")
        check_output_file(doc, "--results-doc")  # an existing file: proves it writable, changes nothing
    path = write_report(list(results), out, docs, section, publish)
    say(f"report: {path}")


def _evaluate_with_progress(questions, system, modules, settings, config, out, batch_size, pool=None):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .evaluation.evaluate import evaluate

    columns = [TextColumn("[b]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[accuracy]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task(f"{system} {config['dataset']}/{config['split']}",
                                 total=len(questions), accuracy="")
        tally = {"n": 0, "correct": 0}

        def on_question(trace):
            tally["n"] += 1
            tally["correct"] += bool(trace.correct)
            progress.update(task, advance=1, accuracy=f"acc {tally['correct']}/{tally['n']}")

        summary = evaluate(questions, system, modules, settings, config, out,
                           batch_size=batch_size, on_question=on_question, pool=pool)
        progress.update(task, completed=len(questions))
    return summary


@cli.command()
def models():
    """List the models tmd knows by name."""
    from .core.registry import EMBEDDED, resolve_model

    for name in EMBEDDED:
        try:
            ref = resolve_model(name)
            say(f"{name}  {ref.path}  ({ref.path.stat().st_size / 1e6:.0f} MB)")
        except TmdError as e:
            console.print(f"{name}  [red]{markup_safe(e, True)}[/red]")


for command in (teach, train, export, app, serve):  # each stage owns its command, in <package>/cli.py
    cli.add_command(command)


def main():
    cli()
