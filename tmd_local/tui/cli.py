"""`tmd app`: the interactive app. Textual is imported only when the command runs.

Its options are the CLI's (tmd_local/terminal/runtime_options.py): --n-ctx, --threads and the quant and memory
options mean, default to and are refused as in ask and eval."""

from __future__ import annotations

import click

from ..core.errors import TmdError
from ..core.registry import DEFAULT_MODEL
from ..terminal.console import one_line_errors
from ..terminal.options import TEXT, count
from ..terminal.runtime_options import (
    build_settings,
    context_options,
    module_memory_options,
    open_runtime_source,
)


@click.command()
@click.option("--bundle", type=click.Path(), default=None,
              help="Bundle folder (models/<bundle>) or its manifest.json.")
@click.option("--model", type=TEXT, default=None,
              help=f"Model name or .gguf path, run zero-shot in every role (default: {DEFAULT_MODEL}).")
@click.option("--system", type=click.Choice(["tmd", "drd"]), default="tmd", show_default=True)
@click.option("--zero-shot", is_flag=True,
              help="Run the model itself for every question, not the shipped distilled students "
                   "(used for four-option questions on the default model).")
@module_memory_options
@context_options
@click.option("--max-tokens", type=count(1, 65_536), default=None,
              help="Cap every stage's generated tokens (quick looks, tests).")
@one_line_errors
def app(bundle, model, system, zero_shot, quant, max_memory, memory_budget, results_paths, keep_loaded, n_ctx, threads,
        max_tokens):
    """Interactive app: ask questions, watch each module load, stream and unload."""
    from ..core.memory import MemoryBudget

    if bundle and model:
        raise click.UsageError("give --bundle or --model, not both")
    source, quant, max_memory = open_runtime_source(model, bundle, quant, max_memory, systems=(system,),
                                                    memory_budget=memory_budget, results_paths=results_paths)
    check_quant(source, quant)
    settings = build_settings(n_ctx, threads)
    if max_tokens is not None:
        settings.max_tokens = {k: min(v, max_tokens) for k, v in settings.max_tokens.items()}
    from ..runtime.shipped import shipped_students
    from .app import TmdApp  # late: Textual costs time `tmd --help` should not pay

    TmdApp(source, quant=quant.lower() if quant else None, system=system, settings=settings,
           budget=MemoryBudget.parse(max_memory), keep_loaded=keep_loaded,
           source_text=str(bundle or model or ""), shipped=shipped_students(model, bundle, zero_shot)).run()


def check_quant(source, quant: str | None) -> None:
    """Refuse, before the app starts, a --quant the source cannot run (the app resolves it per run)."""
    if quant and quant.lower() not in source.choices():
        try:  # a per-role mix such as f16,reasoner=q4_k_m is checked by resolving it
            source.module_set(quant)
        except TmdError as e:
            detail = str(e) if "=" in quant else f"{source.where} offers {', '.join(source.choices())}"
            raise TmdError(f"--quant {quant}: {detail}") from None
