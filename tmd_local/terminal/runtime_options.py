"""The options of every command that runs the modules (ask, demo, eval, serve, app), declared once,
and the builders that turn them into GenerationSettings, a model source and a module pool.

Light at import time (click and the option types): the runtime, llama.cpp and the results reader
load inside the builders, when a command runs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ..core.registry import DEFAULT_MODEL
from .options import N_CTX, SEED, SIZE, TEMPERATURE, TEXT, THREADS


def _apply(func, decorators):
    for decorate in reversed(decorators):
        func = decorate(func)
    return func


def model_option(func):
    return click.option("--model", default=DEFAULT_MODEL, show_default=True,
                        help="Registry name or .gguf path used for every module (zero-shot).")(func)


def context_options(func):
    """--n-ctx and --threads: how much each module sees and how many cores it uses."""
    return _apply(func, [
        click.option("--n-ctx", type=N_CTX, default=2048, show_default=True, help="Context window in tokens."),
        click.option("--threads", type=THREADS, default=None, help="CPU threads (default: all cores)."),
    ])


def generation_options(func):
    """Options shared by every command that answers questions one by one (ask, demo)."""
    return _apply(func, [
        model_option,
        click.option("--system", type=click.Choice(["tmd", "drd", "mc"]), default="tmd", show_default=True,
                     help="mc: no reasoning, the log-likelihood of each option's text."),
        context_options,
        click.option("--temperature", type=TEMPERATURE, default=0.0, show_default=True, help="0 = greedy."),
        click.option("--seed", type=SEED, default=0, show_default=True),
    ])


def module_memory_options(func):
    """Which quantization runs and how the modules share memory (docs/FORMATS.md §5, tmd_local/runtime/pool.py)."""
    return _apply(func, [
        click.option("--quant", type=TEXT, default=None,
                     help="Bundle quantization (default: its default_quant, else q8_0); "
                          "'q8_0+lora' runs merged roles as base + LoRA where shipped; "
                          "'f16,reasoner=q4_k_m' quantizes one module differently."),
        click.option("--max-memory", type=SIZE, default=None, metavar="SIZE",
                     help="Refuse to load a module that would take tmd past SIZE (600MB, 1.5GiB...)."),
        click.option("--memory-budget", type=SIZE, default=None, metavar="SIZE",
                     help="Run the bundle's per-module quant mix with the best measured accuracy whose "
                          "measured peak RSS fits SIZE (from tmd eval results); also sets --max-memory."),
        click.option("--results", "results_paths", multiple=True, type=click.Path(path_type=Path),
                     help="Results JSONL files or folders --memory-budget reads (default: results/)."),
        click.option("--keep-loaded", is_flag=True,
                     help="Keep modules in memory across stages and questions while --max-memory allows."),
    ])


def runtime_options(func=None, *, several_bundles: bool = False):
    """--bundle (repeatable with several_bundles) and the module_memory_options."""
    if func is None:
        return functools.partial(runtime_options, several_bundles=several_bundles)
    bundle = click.option(
        "--bundle", "bundles" if several_bundles else "bundle", type=click.Path(path_type=Path),
        multiple=several_bundles, default=() if several_bundles else None,
        help="Bundle folder (models/<bundle>) or its manifest.json; replaces --model."
             + (" Repeat to evaluate several." if several_bundles else ""))
    return _apply(func, [bundle, module_memory_options])


def build_settings(n_ctx, threads, temperature=0.0, seed=0):
    """GenerationSettings from the options above."""
    from ..runtime.generation import GenerationSettings

    settings = GenerationSettings(n_ctx=n_ctx, temperature=temperature, seed=seed)
    if threads is not None:  # validated at the command line: 1..512
        settings.n_threads = threads
    return settings


def open_runtime_source(model, bundle, quant, max_memory, *, systems, memory_budget=None, results_paths=()):
    """(source, quant, max_memory): the bundle or zero-shot model to run, with --memory-budget
    resolved into the quant mix it picks and the --max-memory it implies."""
    from ..runtime.bundle import open_source
    from .console import warn_plain

    source = open_source(bundle=bundle, model=model)
    for line in source.warnings:  # e.g. a bundle trained on other prompts than this tmd's
        warn_plain(line)
    if memory_budget:
        from ..evaluation.quantmix import quant_for_budget

        quant = quant_for_budget(source, quant, memory_budget, systems, results_paths, warn_plain)
        max_memory = max_memory or memory_budget
    return source, quant, max_memory


def build_runtime(model, bundle, quant, max_memory, keep_loaded, settings, *, systems=("tmd",),
                  memory_budget=None, results_paths=()):
    """(ModuleSet, ModulePool, source) for the options above; the pool must be closed (use it as `with`)."""
    from ..core.memory import MemoryBudget
    from ..runtime.pool import ModulePool

    source, quant, max_memory = open_runtime_source(model, bundle, quant, max_memory, systems=systems,
                                                    memory_budget=memory_budget, results_paths=results_paths)
    modules = source.module_set(quant)
    pool = ModulePool(settings, budget=MemoryBudget.parse(max_memory), keep_loaded=keep_loaded)
    return modules, pool, source
