"""`tmd teach`: a teacher answers training questions in the three modules' formats (and DRD's).

Kept light at import time: the `tmd` command group imports this module for every command, so the
OpenAI SDK, llama.cpp and rich's progress machinery are imported only inside the command.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from tmd_local.terminal.options import N_CTX, TEMPERATURE, TEXT, THREADS, Real, count
from tmd_local.terminal.console import console, err_console, one_line_errors, warn
from tmd_local.core.errors import TmdError


@click.command()
@click.option("--dataset", type=click.Choice(["obqa", "strategyqa", "medqa"]), required=True)
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default="train", show_default=True)
@click.option("--limit", type=count(1), default=None, help="First N questions of the split.")
@click.option("--data-path", type=click.Path(path_type=Path), default=None,
              help="A question file (normalized JSONL or the benchmark's original format).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with <dataset>/<split>.jsonl (default: $TMD_DATA_DIR or ../shared/data).")
@click.option("--teacher", "teacher_spec", type=TEXT, required=True,
              help="gold[:rationale|:facts|:answer] | openai:<model> | gguf:<path or registry name>. gold's "
                   "Reasoner learns the recorded rationale (default), steps built from the facts, or "
                   "(answer) only 'Final Answer: X', as DRD does then.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder, e.g. runs/<name>/teacher. Rerunning the same command resumes.")
@click.option("--concurrency", type=count(1, 256), default=4, show_default=True,
              help="Questions in flight at once (openai only; gguf runs one at a time).")
@click.option("--keep-wrong", is_flag=True, help="Keep traces whose parsed answer is wrong.")
@click.option("--base-url", default=None, help="API base URL (default: $OPENAI_BASE_URL, else OpenAI).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Name of the environment variable holding the API key (the key is never printed).")
@click.option("--timeout", type=Real(0, 86_400, low_open=True), default=120.0, show_default=True,
              help="Seconds one request may take, start to end (however slowly the server answers).")
@click.option("--retries", type=count(0, 100), default=5, show_default=True,
              help="Re-sends after 429/5xx/timeouts/connection errors, with exponential backoff.")
@click.option("--backoff", type=Real(0, 3_600), default=1.0, show_default=True,
              help="Seconds before the first retry; doubles each time (a Retry-After header wins).")
@click.option("--max-tokens", type=count(1, 65_536), default=None,
              help="Reply limit for every stage (default: analyzer/informant 256, reasoner/drd 512).")
@click.option("--temperature", type=TEMPERATURE, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--n-ctx", type=N_CTX, default=4096, show_default=True, help="Context window (gguf only).")
@click.option("--threads", type=THREADS, default=None, help="CPU threads (gguf only; default: all cores).")
@one_line_errors
def teach(dataset, split, limit, data_path, data_dir, teacher_spec, out, concurrency, keep_wrong,
          base_url, api_key_env, timeout, retries, backoff, max_tokens, temperature, n_ctx, threads):
    """A teacher (gold, openai:<model>, gguf:<model>) writes the four students' training sets."""
    from tmd_local.core.datasets import load_questions

    from .run import RunConfig, prepare_out_dir, run_gold
    from .spec import parse_spec

    spec = parse_spec(teacher_spec)
    questions, report = load_questions(dataset, split, path=data_path, data_dir=data_dir, limit=limit)
    for line in report.warnings():
        warn(line)
    prepare_out_dir(out)
    cfg = RunConfig(dataset=dataset, split=split, limit=limit, source=report.source, out=out,
                    teacher=spec.label, keep_wrong=keep_wrong, temperature=temperature)
    if spec.kind == "gold":
        summary = run_gold(questions, cfg)
    else:
        summary = _run_model_teacher(spec, questions, cfg, concurrency=concurrency, base_url=base_url,
                                     api_key_env=api_key_env, timeout=timeout, retries=retries,
                                     backoff=backoff, max_tokens=max_tokens, n_ctx=n_ctx, threads=threads)
    _print_summary(summary, out)


def _run_model_teacher(spec, questions, cfg, *, concurrency, base_url, api_key_env, timeout, retries,
                       backoff, max_tokens, n_ctx, threads) -> dict:
    from .model_teacher import DEFAULT_MAX_TOKENS
    from .run import run_model

    cfg.max_tokens = {s: max_tokens for s in DEFAULT_MAX_TOKENS} if max_tokens else dict(DEFAULT_MAX_TOKENS)
    backend = _open_backend(spec, base_url=base_url, api_key_env=api_key_env, timeout=timeout,
                            retries=retries, backoff=backoff, temperature=cfg.temperature, n_ctx=n_ctx,
                            threads=threads)
    try:
        cfg.teacher = backend.name
        if spec.kind == "openai":
            cfg.concurrency = concurrency
            cfg.teacher_info = {"base_url": backend.where, "timeout": timeout, "retries": retries}
        else:
            cfg.teacher_info = {"model_path": str(backend.ref.path), "n_ctx": n_ctx,
                                "threads": backend.threads, "load_seconds": round(backend.load_seconds, 2)}
        with _RichProgress(f"{cfg.teacher} {cfg.dataset}/{cfg.split}") as progress:
            return run_model(questions, cfg, backend, progress)
    finally:
        backend.close()


def _open_backend(spec, *, base_url, api_key_env, timeout, retries, backoff, temperature, n_ctx, threads):
    from .backends import GGUFBackend, OpenAIBackend

    if spec.kind == "gguf":
        from tmd_local.core.registry import resolve_model

        ref = resolve_model(spec.target)
        from tmd_local.core.display import markup_safe

        with err_console.status(f"loading {markup_safe(ref.name, True)}..."):
            return GGUFBackend(ref, n_ctx=n_ctx, temperature=temperature, threads=threads)
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    api_key = os.environ.get(api_key_env) or None
    if api_key is None and base_url is None:
        raise TmdError(f"--teacher {spec.label}: set ${api_key_env} to your API key, or point "
                       "--base-url at a local OpenAI-compatible server")
    return OpenAIBackend(spec.target, base_url=base_url, api_key=api_key, api_key_env=api_key_env,
                         timeout=timeout, retries=retries, backoff=backoff, temperature=temperature)


class _RichProgress:
    """The run's Progress hooks drawn as a rich bar: done/total, seconds per question, ETA.
    Transient: once the run ends (or fails) the table or the one-line error takes its place."""

    def __init__(self, description: str):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        from tmd_local.core.display import markup_safe

        self._bar = Progress(TextColumn("[b]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             _seconds_per_item_column(), TimeElapsedColumn(), TextColumn("eta"),
                             TimeRemainingColumn(), console=err_console, transient=True)
        self._description = markup_safe(description, one_line=True)
        self._task = None

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def start(self, total: int, done: int) -> None:
        self._task = self._bar.add_task(self._description, total=total, completed=done, resumed=done)

    def advance(self) -> None:
        self._bar.advance(self._task)


def _seconds_per_item_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class SecondsPerItem(ProgressColumn):
        """Seconds per question asked in this run (questions replayed from the journal excluded)."""

        def render(self, task):
            asked = task.completed - task.fields.get("resumed", 0)
            if not asked or not task.elapsed:
                return Text("-- s/q", style="cyan")
            return Text(f"{task.elapsed / asked:.1f} s/q", style="cyan")

    return SecondsPerItem()



def _print_summary(summary: dict, out: Path) -> None:
    from rich.table import Table

    from tmd_local.core.display import markup_safe, visible

    table = Table(title=f"teacher {markup_safe(summary['teacher'], True)} on {summary['dataset']}/"
                        f"{summary['split']} ({summary['questions']} questions)")
    for column in ("module", "kept", "rejected", "rejected by reason"):
        table.add_column(column, justify="right" if column in ("kept", "rejected") else "left")
    for module, counts in summary["modules"].items():
        reasons = counts["rejected"]
        table.add_row(module, str(counts["kept"]), str(sum(reasons.values())),
                      ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) or "-")
    console.print(table)
    for note in _summary_notes(summary):
        console.print(visible(note), highlight=False, markup=False)
    console.print(visible(f"training sets: {out}/{{analyzer,informant,reasoner,drd}}.jsonl  "
                          f"rejected: {out}/rejected.jsonl  summary: {out}/summary.json"),
                  highlight=False, markup=False)


def _summary_notes(summary: dict) -> list[str]:
    notes = [f"tokens in/out {summary['tokens']['prompt']}/{summary['tokens']['completion']}, "
             f"wall {summary['wall_seconds']} s"
             + (f", {summary['seconds_per_new_question']} s per new question"
                if summary.get("seconds_per_new_question") and summary.get("new_questions") is not None else "")]
    if summary.get("resumed_questions"):
        notes.append(f"resumed: {summary['resumed_questions']} questions replayed from the journal, "
                     f"{summary['new_questions']} asked now")
    if summary.get("retries"):
        notes.append(f"retries after transient errors: {summary['retries']}")
    if "skipped" in summary:
        notes.append(f"skipped analyzer/informant for {summary['skipped']['analyzer']} questions: "
                     f"{summary['skipped']['why']}")
    return notes
