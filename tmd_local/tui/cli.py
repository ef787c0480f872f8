"""`tmd app`: the interactive app. Textual is imported only when the command runs."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ..cli_options import N_CTX, SIZE, TEXT, THREADS, OptionError, count
from ..errors import TmdError
from ..registry import DEFAULT_MODEL


def one_line_errors(func):
    """TmdError -> 'Error: <message>' on stderr and exit status 1 (tmd_local.cli imports this module,
    so it cannot import tmd_local.cli's own decorator back)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TmdError as e:
            raise OptionError(str(e)) from None  # one line, shown as written
    return wrapper


@click.command()
@click.option("--bundle", type=click.Path(), default=None,
              help="Bundle folder (models/<bundle>) or its manifest.json.")
@click.option("--model", default=None,
              help=f"Model name or .gguf path, run zero-shot in every role (default: {DEFAULT_MODEL}).")
@click.option("--quant", type=TEXT, default=None,
              help="Quantization to run (default: the bundle's default_quant, else q8_0 if present); "
                   "'q8_0+lora' runs merged roles as base + LoRA where the bundle ships both.")
@click.option("--system", type=click.Choice(["tmd", "drd"]), default="tmd", show_default=True)
@click.option("--max-memory", type=SIZE, default=None, metavar="SIZE",
              help="Refuse to load a module that would take this process past SIZE (e.g. 600MB, 1GiB).")
@click.option("--memory-budget", type=SIZE, default=None, metavar="SIZE",
              help="Start with the bundle's quant mix with the best measured accuracy whose measured "
                   "peak RSS fits SIZE (from tmd eval results); also sets --max-memory.")
@click.option("--results", "results_paths", multiple=True, type=click.Path(path_type=Path),
              help="Results JSONL files or folders --memory-budget reads (default: results/).")
@click.option("--keep-loaded", is_flag=True,
              help="Keep modules in memory across stages and questions while the budget allows.")
@click.option("--n-ctx", type=N_CTX, default=2048, show_default=True, help="Context window in tokens.")
@click.option("--threads", type=THREADS, default=None, help="CPU threads (default: all cores).")
@click.option("--max-tokens", type=count(1, 65_536), default=None,
              help="Cap every stage's generated tokens (quick looks, tests).")
@one_line_errors
def app(bundle, model, quant, system, max_memory, memory_budget, results_paths, keep_loaded, n_ctx, threads,
        max_tokens):
    """Interactive app: ask questions, watch each module load, stream and unload."""
    from ..bundle import open_source
    from ..memory import MemoryBudget
    from ..runner import GenerationSettings

    if bundle and model:
        raise click.UsageError("give --bundle or --model, not both")
    source = open_source(bundle=bundle, model=model)
    if memory_budget:
        from ..quantmix import quant_for_budget

        from ..display import visible

        quant = quant_for_budget(source, quant, memory_budget, (system,), results_paths,
                                 lambda line: click.echo(visible(line)))
        max_memory = max_memory or memory_budget
    if quant and quant.lower() not in source.choices():
        try:  # a per-role mix such as f16,reasoner=q4_k_m is checked by resolving it
            source.module_set(quant)
        except TmdError as e:
            detail = str(e) if "=" in quant else f"{source.where} offers {', '.join(source.choices())}"
            raise TmdError(f"--quant {quant}: {detail}") from None
    settings = GenerationSettings(n_ctx=n_ctx)
    if threads is not None:
        settings.n_threads = threads
    if max_tokens is not None:
        settings.max_tokens = {k: min(v, max_tokens) for k, v in settings.max_tokens.items()}
    from .app import TmdApp  # late: Textual costs time `tmd --help` should not pay

    TmdApp(source, quant=quant.lower() if quant else None, system=system, settings=settings,
           budget=MemoryBudget.parse(max_memory), keep_loaded=keep_loaded,
           source_text=str(bundle or model or "")).run()
