"""`tmd train`: LoRA fine-tuning of one module (or all four) on a teacher run's training sets.

Imported by the `tmd` command group to register the command, so nothing heavy is imported at module level:
torch, transformers and peft load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from tmd_local.terminal.options import SEED, THREADS, Real, Whole, count
from tmd_local.terminal.console import console, err_console, one_line_errors
from tmd_local.core.roles import ROLES

MODULE_CHOICES = ROLES


def _csv(ctx, param, value):
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command()
@click.option("--module", type=click.Choice(MODULE_CHOICES), default=None,
              help="The module to train (or --all).")
@click.option("--all", "all_modules", is_flag=True,
              help="Train all four, one after another, into <out>/<module>.")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="The teacher run folder (runs/<name>/teacher, holding <module>.jsonl) or one .jsonl.")
@click.option("--base", default="smollm2-135m-instruct", show_default=True,
              help="Registry name, .gguf file or Hugging Face folder of the student base model.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Adapter folder (with --all: the folder that gets one per module). "
                   "Default: runs/<name>/adapters[/<module>] beside the teacher folder.")
@click.option("--epochs", type=count(1, 1000), default=3, show_default=True)
@click.option("--max-steps", type=count(1), default=None, help="Stop after N optimizer steps (overrides --epochs).")
@click.option("--lr", type=Real(0, 1, low_open=True), default=1e-4, show_default=True, help="AdamW learning rate (linear decay).")
@click.option("--batch-size", type=count(1, 4096), default=2, show_default=True)
@click.option("--grad-accum", type=count(1, 4096), default=4, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--max-length", type=count(16, 131_072), default=512, show_default=True, help="Tokens per example, at most.")
@click.option("--weight-decay", type=Real(0, 10), default=0.01, show_default=True)
@click.option("--warmup-steps", type=count(0), default=0, show_default=True)
@click.option("--max-grad-norm", type=Real(0, 1e6), default=1.0, show_default=True, help="0 disables clipping.")
@click.option("--lora-r", type=int, default=16, show_default=True)
@click.option("--lora-alpha", type=Real(0, 1e6, low_open=True), default=8, show_default=True)
@click.option("--lora-dropout", type=Real(0, 0.99), default=0.1, show_default=True)
@click.option("--target-modules", callback=_csv, default=None,
              help="Comma-separated module names for LoRA (default: per architecture, "
                   "llama: q,k,v,o,gate,up,down _proj).")
@click.option("--pad-to-max", is_flag=True, help="Pad every batch to --max-length, as the paper did.")
@click.option("--truncation", type=click.Choice(["middle", "left"]), default="middle", show_default=True,
              help="Where a too-long prompt is cut (the target is always kept).")
@click.option("--eval-fraction", type=Real(0, 0.9), default=0.05, show_default=True,
              help="Share of questions held out for the eval loss (0 = none).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--save-every", type=count(0), default=50, show_default=True,
              help="Checkpoint every N optimizer steps (0 = at epoch ends only).")
@click.option("--save-minutes", type=Real(0, 1e6), default=10, show_default=True,
              help="Also checkpoint once this many minutes have passed since the last (0 = off).")
@click.option("--keep-checkpoints", type=count(1, 1000), default=2, show_default=True)
@click.option("--keep-checkpoints-after", is_flag=True, help="Leave checkpoints/ once the run has finished.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
              show_default=True, help="auto: bf16 on CPUs with bf16 units (AVX512-BF16 or AMX) and CUDA devices that have "
                   "them, fp16 + loss scaling on other CUDA devices, fp32 elsewhere.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=THREADS, default=None,
              help="CPU threads per rank (default: the available cores shared out among the ranks).")
@click.option("--nproc", type=Whole(1, 4096), default=1, show_default=True,
              help="Training processes (ranks) on torch.distributed: DDP with gloo on CPU, nccl on CUDA, "
                   "the same global batch (each rank takes every N-th micro-batch of a step). "
                   "Under torchrun, leave it at 1.")
@click.option("--low-memory", is_flag=True,
              help="Recompute each layer in backward instead of keeping its activations, and give freed "
                   "memory back to the system: the Reasoner at batch 2 x 512 peaked at 1.5 GB instead of "
                   "5.1, at about half the tokens/s.")
@click.option("--resume", is_flag=True, help="Require a checkpoint to resume (resuming is automatic anyway).")
@click.option("--fresh", is_flag=True, help="Discard checkpoints and any finished run in the output first.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
@one_line_errors
def train(module, all_modules, data, base, out, epochs, max_steps, lr, batch_size, grad_accum, max_length,
          weight_decay, warmup_steps, max_grad_norm, lora_r, lora_alpha, lora_dropout, target_modules,
          pad_to_max, truncation, eval_fraction, seed, save_every, save_minutes, keep_checkpoints,
          keep_checkpoints_after, precision, device, threads, nproc, low_memory, resume, fresh,
          no_progress):
    """LoRA fine-tuning of a student module on a teacher run (resumable; writes a peft adapter)."""
    from tmd_local.core.errors import TmdError
    from tmd_local.core.memory import reset_peak_rss

    from .config import TrainConfig

    if bool(module) == bool(all_modules):
        raise TmdError("train: give exactly one of --module <name> or --all")
    if resume and fresh:
        raise TmdError("train: --resume and --fresh contradict each other; give one")
    modules = list(MODULE_CHOICES) if all_modules else [module]
    root = out if out is not None else default_out(data)
    outs = {m: (root / m if all_modules or out is None else root) for m in modules}
    configs = [TrainConfig(module=m, data=data, out=outs[m], base=base, lora_r=lora_r,
                           lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
                           lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                           max_grad_norm=max_grad_norm, epochs=epochs, max_steps=max_steps,
                           batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
                           pad_to_max=pad_to_max, truncation=truncation, eval_fraction=eval_fraction,
                           seed=seed, save_every=save_every, save_minutes=save_minutes,
                           keep_checkpoints=keep_checkpoints,
                           keep_checkpoints_after=keep_checkpoints_after, precision=precision,
                           device=device, threads=threads, activation_checkpointing=low_memory,
                           release_memory=low_memory,
                           progress=not no_progress)
               for m in modules]
    if all_modules and data.suffix == ".jsonl":
        raise TmdError(f"--data {data}: with --all, give the teacher run folder holding all four .jsonl files")
    from .data import load_records
    for cfg in configs:  # every training set is readable before hours go into the first module
        load_records(cfg.data_file(), cfg.module)

    from . import distributed

    distributed.check_nproc(nproc, device)
    resume = True if resume else None
    if nproc > 1:
        _train_ranks(configs, nproc, resume, fresh)
        return
    if distributed.under_torchrun():
        _train_under_torchrun(configs, resume, fresh)
        return
    from .train import train as train_one

    results = []
    for cfg in configs:
        reset_peak_rss()
        results.append(train_one(cfg, resume=resume, fresh=fresh, console=err_console))
        import gc
        gc.collect()
    _summary(results)


def _train_ranks(configs, nproc: int, resume, fresh: bool) -> None:
    """--nproc N: each module in turn, trained by N fresh local processes."""
    from . import distributed
    from .outputs import finished_record
    from .train import train_rank

    for cfg in configs:
        distributed.launch(nproc, train_rank, cfg, resume, fresh)
    _summary([_result_from_disk(cfg, finished_record) for cfg in configs])


def _train_under_torchrun(configs, resume, fresh: bool) -> None:
    """This process is one of torchrun's ranks: join its process group, train, rank 0 reports."""
    from . import distributed
    from .device import pick_device
    from .train import train as train_one

    ranks = distributed.init(pick_device(configs[0])[0].type)
    try:
        results = [train_one(cfg, resume=resume, fresh=fresh, console=err_console if ranks.main else None)
                   for cfg in configs]
    finally:
        distributed.shutdown()
    if ranks.main:
        _summary(results)


def _result_from_disk(cfg, finished_record):
    """What the ranks' run left in cfg.out, for the summary table."""
    import json

    from .outputs import TrainResult

    metrics_file = cfg.out / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if finished_record(cfg.out) and metrics_file.is_file() else {}
    return TrainResult(cfg.module, cfg.out, metrics=metrics)


def default_out(data: Path) -> Path:
    """runs/<name>/teacher -> runs/<name>/adapters (a .jsonl file counts as its folder)."""
    folder = data.parent if data.suffix == ".jsonl" else data
    return folder.parent / "adapters"


def _summary(results) -> None:
    from rich.table import Table

    table = Table(title="tmd train")
    for col in ("module", "steps", "loss first -> last", "held-out", "tok/s", "wall", "peak RSS",
                "padded", "truncated", "adapter"):
        table.add_column(col)
    for r in results:
        m = r.metrics
        if not m:
            table.add_row(r.module, "", "", "", "", "", "", "", "", str(r.out))
            continue
        ex = m.get("examples", {})
        table.add_row(r.module + (" (already done)" if r.skipped else ""), f"{m['steps']}",
                      f"{m['first_loss']:.3f} -> {m['final_loss']:.3f}",
                      f"{m['eval_loss']:.3f}" if m.get("eval_loss") is not None else "-",
                      f"{m['tokens_per_second']:.0f}", f"{m['wall_seconds']:.0f}s",
                      f"{m['peak_rss_mb']:.0f} MB", f"{m['padded_token_ratio']:.1%}",
                      f"{ex.get('truncated', 0)}", str(r.out))
    console.print(table)
