"""What a run leaves in its output folder: the adapter and tokenizer, metrics.json, loss.png and
tmd.json (written last, so its presence means a finished run); and reading a finished run back."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tmd_local import __version__ as TMD_VERSION
from tmd_local.core.errors import TmdError
from tmd_local.core.formats import AdapterMeta
from tmd_local.core.jsonl import read_json, write_json_atomic
from tmd_local.core.registry import file_sha256

from .checkpoint import LoopState, json_object
from .config import TrainConfig
from .data import Prepared, length_grouped_batches, padding_ratio

DONE_FILE = "tmd.json"


@dataclass
class TrainResult:
    """What train() returns: where the adapter is, and the run's metrics."""
    module: str
    out: Path
    skipped: bool = False        # the output already held this finished run
    resumed_from: int = 0        # the step a checkpoint put us at (0 = fresh start)
    metrics: dict = field(default_factory=dict)


def run_metrics(cfg, state: LoopState, data: Prepared, lengths, device, precision, threads, total_steps,
                resumed_from) -> dict:
    """metrics.json: the loss curve, held-out losses, token counts, padding, speed, memory, data."""
    batches0 = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, 0)
    losses = [e["loss"] for e in state.log]
    return {
        "module": cfg.module,
        "steps": state.step, "total_steps": total_steps, "epochs": cfg.epochs,
        "steps_per_epoch": math.ceil(len(batches0) / cfg.grad_accum),
        "loss_per_step": state.log,
        "eval": state.evals,
        "eval_loss": state.evals[-1]["loss"] if state.evals else None,
        "first_loss": losses[0] if losses else float("nan"),
        "final_loss": losses[-1] if losses else float("nan"),
        "tokens_trained": state.tokens, "target_tokens_trained": state.target_tokens,
        "token_slots": state.slots,
        "padded_token_ratio": round((state.slots - state.tokens) / state.slots, 4) if state.slots else 0.0,
        # the same epoch-0 batches padded both ways, to compare dynamic padding with the paper's
        "padded_token_ratio_dynamic": round(padding_ratio(batches0, lengths, None), 4),
        "padded_token_ratio_pad_to_max": round(padding_ratio(batches0, lengths, cfg.max_length), 4),
        "tokens_per_second": state.tokens / state.train_seconds if state.train_seconds else 0.0,
        "train_seconds": round(state.train_seconds, 2),
        "wall_seconds": round(state.wall_seconds, 2),
        "peak_rss_mb": round(state.peak_rss_mb, 1),
        "sessions": state.sessions, "resumed_from_step": resumed_from,
        "examples": {"records": data.stats.records, "train": data.stats.train, "eval": data.stats.eval,
                     "truncated": data.stats.truncated, "dropped": data.stats.dropped,
                     "dropped_ids": data.stats.dropped_ids,
                     "max_example_tokens": data.stats.max_example_tokens},
        "device": device.type, "precision": precision, "threads": threads,
        "peak_gpu_memory_mb": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                               if device.type == "cuda" else None),
        "torch": torch.__version__,
    }


def write_outputs(cfg, model, tokenizer, data: Prepared, metrics, state, fingerprint, targets,
                  precision, device, ranks: int = 1) -> None:
    """The adapter, tokenizer, metrics.json and loss.png, then tmd.json last (it marks the run done)."""
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    write_json_atomic(out / "metrics.json", metrics)
    plot_losses(state.log, state.evals, out / "loss.png",
                f"{cfg.module} LoRA on {cfg.base} ({data.teacher} teacher)")
    # the precision `auto` resolved to; ranks: the processes that trained it (same global batch)
    hyper = {**cfg.hyperparameters(), "target_modules": targets, "precision": precision,
             "device": device.type, "ranks": ranks}
    # what was really trained, so every result of this student can say it (epochs honestly)
    training = {"questions": len({e.group for e in data.train}), "examples": len(data.train),
                "steps": state.step, "epochs": round(metrics["steps"] / max(1, metrics["steps_per_epoch"]), 3),
                "lr": cfg.lr}
    meta = AdapterMeta(module=cfg.module, base=cfg.base, base_source=str(data.base_dir.resolve()),
                       teacher=data.teacher, data=str(data.data_file), data_sha256=data.data_sha256,
                       hyperparameters=hyper, training=training, tmd_version=TMD_VERSION,
                       prompt_version=data.prompt_version)
    write_json_atomic(out / DONE_FILE, meta.to_json())


def plot_losses(log: list[dict], evals: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if log:
        steps, losses = [e["step"] for e in log], [e["loss"] for e in log]
        ax.plot(steps, losses, label="train (per step)", lw=1, alpha=0.45 if len(log) >= 10 else 1)
        if len(log) >= 10:  # a step sees only batch x accum examples: show the trend too
            w = max(3, len(log) // 8)
            smooth = [sum(losses[max(0, i - w + 1):i + 1]) / len(losses[max(0, i - w + 1):i + 1])
                      for i in range(len(losses))]
            ax.plot(steps, smooth, label=f"train (mean of last {w} steps)", lw=1.8, color="C0")
    if evals:
        ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o--", label="held-out")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over target tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def finished_record(out: Path) -> AdapterMeta | None:
    """The tmd.json of a finished run in `out`; None when there is none, one line when unreadable."""
    path = out / DONE_FILE
    if not path.is_file():
        return None
    try:
        return AdapterMeta.from_json(read_json(path, "tmd.json"), str(path))
    except TmdError as e:  # hand-edited: say so, rather than silently train again over it
        raise TmdError(f"{e}; fix it, or pass --fresh to train again") from None


def the_finished_run(done: AdapterMeta, cfg: TrainConfig, fingerprint: dict, data_file: Path,
                     say) -> TrainResult:
    """cfg.out already holds a finished run: this very one (nothing to do), or another (an error)."""
    differs = _differs_from_finished(done, cfg, fingerprint, data_file)
    if differs:
        raise TmdError(f"{cfg.out}: holds a finished run with other {differs}; choose another --out "
                       "or pass --fresh to replace it")
    say(f"[green]{cfg.module}[/green]: {cfg.out} already holds this finished run; nothing to do "
        "(--fresh retrains)")
    metrics_file = cfg.out / "metrics.json"
    metrics = json_object(read_json(metrics_file, "metrics file"), metrics_file) if metrics_file.is_file() else {}
    return TrainResult(cfg.module, cfg.out, skipped=True, metrics=metrics)


def _differs_from_finished(done: AdapterMeta, cfg: TrainConfig, fingerprint: dict, data_file: Path) -> str:
    """'' when tmd.json records this very run (same data and training settings), else what differs."""
    if not data_file.is_file() or done.data_sha256 != file_sha256(data_file):
        return "data (sha256 differs)"
    recorded = {**done.hyperparameters, "module": done.module, "base": done.base}
    for key, value in fingerprint.items():
        if key == "target_modules" and value is None:
            continue  # the architecture's default: the same base gives the same list
        if recorded.get(key) != value:
            return f"settings ({key}={recorded.get(key)!r}, this run has {value!r})"
    return ""
