"""Rich progress and summary tables for `tmd export`."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)
from rich.table import Table

from .export import ExportResult, Reporter


class RichReporter(Reporter):
    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.task = None

    def begin(self, total: int) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("[b]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=self.console)
        self.progress.start()
        self.task = self.progress.add_task("export", total=total)

    def step_started(self, label: str) -> None:
        if self.progress:
            self.progress.update(self.task, description=label)

    def step_finished(self, label: str, seconds: float, cached: bool) -> None:
        if self.progress:
            state = "[dim]done already[/dim]" if cached else f"{seconds:.1f}s"
            self.progress.console.print(f"  [green]ok[/green] {label}  {state}", highlight=False)
            self.progress.advance(self.task)

    def note(self, message: str) -> None:
        (self.progress.console if self.progress else self.console).print(f"  [yellow]{message}[/yellow]",
                                                                         highlight=False)

    def end(self) -> None:
        if self.progress:
            self.progress.update(self.task, description="export")
            self.progress.stop()
            self.progress = None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def files_table(result: ExportResult) -> Table:
    t = Table(title=f"Bundle {result.out}", title_justify="left")
    for col, just in (("file", "left"), ("type", "left"), ("MB", "right"), ("bits/weight", "right"),
                      ("tensor types", "left"), ("made in s", "right")):
        t.add_column(col, justify=just)
    for r in result.files:
        types = ", ".join(f"{k}:{v}" for k, v in r["tensor_types"].items())
        t.add_row(r["file"], r["file_type"] if r["general_type"] == "model" else "lora", _mb(r["size"]),
                  f"{r['bits_per_weight']:.3f}", types, f"{r['seconds']:.1f}")
    return t


def checks_table(result: ExportResult) -> Table:
    t = Table(title="Against the merged HF model (teacher-forced top-1, greedy generations)",
              title_justify="left")
    for col, just in (("module", "left"), ("file", "left"), ("quant", "left"), ("top-1", "right"),
                      ("positions", "right"), ("greedy = HF", "right"), ("tokenizer", "left"),
                      ("check s", "right")):
        t.add_column(col, justify=just)
    for key, c in result.checks.items():
        role = key.split("/", 1)[0]
        gens = c["generations"]
        same = sum(g["match"] for g in gens)
        t.add_row(role, c["file"] + (f" + {c['lora']}" if c["lora"] else ""), c["quant"],
                  f"{c['top1_agreement']:.2%}", str(c["positions"]), f"{same}/{len(gens)}",
                  "same" if c["tokenizer_match"] else "[yellow]differs[/yellow]", f"{c['seconds']:.1f}")
    return t


def generations_table(result: ExportResult, width: int = 70) -> Table:
    """Greedy continuations side by side: the HF model, then each GGUF (per module and prompt)."""
    t = Table(title="Greedy generations (32 tokens)", title_justify="left", show_lines=True)
    t.add_column("module / prompt")
    t.add_column("source")
    t.add_column("text")
    by_role: dict[str, list[dict]] = {}
    for key, c in result.checks.items():
        by_role.setdefault(key.split("/", 1)[0], []).append(c)
    for role, checks in by_role.items():
        ref = result.references.get(role)
        if not ref:
            continue
        for i, g in enumerate(ref["generations"]):
            t.add_row(f"{role} / {g['label']}", "HF (merged)" if role != "base" else "HF (base)",
                      _clip(g["text"], width))
            for c in checks:
                cg = c["generations"][i]
                mark = "[green]=[/green]" if cg["match"] else f"[yellow]~{cg['common_prefix']}[/yellow]"
                src = c["quant"] + (" + lora" if c["lora"] else "")
                t.add_row("", f"{src} {mark}", _clip(cg["text"], width))
    return t


def steps_table(result: ExportResult) -> Table:
    t = Table(title=f"Steps ({result.seconds:.0f}s in all)", title_justify="left")
    t.add_column("module")
    t.add_column("step")
    t.add_column("target")
    t.add_column("seconds", justify="right")
    for s in result.steps:
        t.add_row(s.module, s.step, s.target, "cached" if s.cached else f"{s.seconds:.1f}")
    return t


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_summary(console: Console, result: ExportResult) -> None:
    console.print(steps_table(result))
    console.print(files_table(result))
    if result.checks:
        console.print(checks_table(result))
        console.print(generations_table(result))
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"manifest: {result.manifest_path}")
