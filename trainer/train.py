"""The training run: LoRA on one module's teacher set, a plain loop, checkpoints that resume exactly.

Reading order: `train()` drives everything; its inner functions take one optimizer step, record
it and checkpoint. One optimizer step = `grad_accum` micro-batches. The loss of a step is the mean
over the target tokens of all its micro-batches (each micro-batch's summed token loss is divided
by the step's target-token count before backward), so a step means the same thing whatever the
padding or the split into micro-batches.

Resuming: a checkpoint holds the adapter, optimizer, scheduler, grad scaler, RNG states, step,
epoch, the position in the epoch and that epoch's batch order. A resumed run continues with the
same batches and the same dropout draws, so it reaches the result of an uninterrupted run.

The parts: device.py (device, precision, threads), data.py (`prepare`: the run's examples),
model.py (base + LoRA), loss.py (the loss and held-out loss), checkpoint.py (save and resume),
outputs.py (the output folder, a finished run), progress.py (progress bar, status line, stop signals).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from tmd_local.core.errors import TmdError
from tmd_local.core.memory import peak_rss_mb

from .checkpoint import Checkpoints, LoopState, checkpoint_to_resume
from .config import TrainConfig
from .data import collate, length_grouped_batches, prepare
from .device import autocast_for, pick_device, return_freed_memory, set_threads
from .distributed import all_gather_floats, all_sum, barrier, passes_per_rank, rank_share
from .distributed import current as current_ranks
from .loss import TargetLoss, evaluate, supports_chunked_loss, supports_logits_to_keep
from .model import load_model
from .outputs import DONE_FILE, TrainResult, finished_record, run_metrics, the_finished_run, write_outputs
from .progress import ProgressBar, status_line, stop_requests


StepHook = Callable[[LoopState], None]


def train(cfg: TrainConfig, *, resume: bool | None = None, fresh: bool = False, console=None,
          on_step: StepHook | None = None) -> TrainResult:
    """Train one module's adapter into cfg.out. resume=None resumes a checkpoint if there is one,
    True requires one, False ignores none (an existing checkpoint is an error); fresh=True clears
    checkpoints and any finished run in cfg.out first. `on_step` sees the state after every step
    (and its checkpoint, if any); an exception there stops the run as a kill would.

    In a process group (`--nproc`, torchrun) every rank calls this; rank 0 alone writes files and
    prints (pass `console` on rank 0 only)."""
    ranks = current_ranks()
    say = console.print if console is not None and ranks.main else (lambda *a, **k: None)
    started = time.perf_counter()
    out = cfg.out
    ckpts = Checkpoints(out, cfg.keep_checkpoints)
    if fresh and ranks.main:
        _clear(ckpts, out)
    barrier()  # every rank sees the output folder as rank 0 left it

    device, precision = pick_device(cfg, ranks)
    fingerprint = {**cfg.run_fingerprint(), "precision": precision}
    data_file = cfg.data_file()
    done = finished_record(out)
    if done is not None:
        return the_finished_run(done, cfg, fingerprint, data_file, say)

    threads = set_threads(cfg, ranks)
    if cfg.release_memory:
        return_freed_memory()
    data = prepare(cfg, warn=lambda s: say(f"[yellow]warning:[/yellow] {s}", highlight=False))
    tokenizer = data.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    lengths = [len(e) for e in data.train]
    pad_to = cfg.max_length if cfg.pad_to_max else None

    steps_per_epoch, total_steps, epochs = _schedule(cfg, lengths)

    model, targets = load_model(cfg, data.base_dir, device, precision)
    keep_ok = cfg.head_on_targets_only and supports_logits_to_keep(model)
    chunked = cfg.head_on_targets_only and cfg.chunked_loss and supports_chunked_loss(model)
    loss_of = TargetLoss(model, device, keep_ok, chunked)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(cfg, params, total_steps)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    # the module each training pass goes through: DDP sums the ranks' gradients in its backward
    step_loss = loss_of if not ranks.distributed else torch.nn.parallel.DistributedDataParallel(
        loss_of, device_ids=[device.index] if device.type == "cuda" else None)

    meta = {"fingerprint": fingerprint, "data_sha256": data.data_sha256, "total_steps": total_steps,
            "eval_ids": sorted(e.id for e in data.eval)}
    state = LoopState()
    latest = checkpoint_to_resume(ckpts, resume, data, fingerprint)
    if latest is not None:
        state = Checkpoints.restore(latest, model, optimizer, scheduler, scaler)
        say(f"[cyan]{cfg.module}[/cyan]: resuming from {latest.name} (step {state.step}/{total_steps})")
    resumed_from = state.step
    state.sessions += 1

    stats = data.stats
    rank_note = f", {ranks.world} ranks" if ranks.distributed else ""
    say(f"[b]{cfg.module}[/b]: {stats.train} train / {stats.eval} held-out examples from "
        f"{data.data_file}; {total_steps} steps ({steps_per_epoch}/epoch, batch {cfg.batch_size} x "
        f"accum {cfg.grad_accum}); {device.type} {precision}, {threads} threads{rank_note}; LoRA r={cfg.lora_r} "
        f"alpha={cfg.lora_alpha} on {','.join(targets)}; truncated {stats.truncated}, dropped {stats.dropped}",
        highlight=False)

    def evaluate_now():
        loss = evaluate(loss_of, data.eval, cfg, pad_id, precision, ranks)
        if loss is not None:
            state.evals.append({"step": state.step, "epoch": state.epoch, "loss": round(loss, 6)})
        return loss

    def elapsed() -> float:
        return state.wall_seconds + (time.perf_counter() - started)

    last_save = time.perf_counter()

    def checkpoint() -> Path:
        """Rank 0 writes it; the others only name it (they hold the same weights)."""
        nonlocal last_save
        last_save = time.perf_counter()
        if not ranks.main:
            return ckpts.root / f"step-{state.step:06d}"
        rss = max(state.peak_rss_mb, peak_rss_mb())
        snapshot = dataclasses.replace(state, wall_seconds=elapsed(), peak_rss_mb=rss)
        return ckpts.save(model, optimizer, scheduler, scaler, snapshot, meta)

    def checkpoint_due(end_of_epoch: bool) -> bool:
        timed = cfg.save_minutes and time.perf_counter() - last_save >= 60 * cfg.save_minutes
        return bool(end_of_epoch or (cfg.save_every and state.step % cfg.save_every == 0) or timed)

    def optimizer_step(window: list[list[int]]) -> tuple[float, list[float]]:
        """This rank's share of one optimizer step over grad_accum micro-batches: (its summed
        target-token loss, its [tokens, slots, target tokens]). The gradient is the whole step's."""
        n_target = sum(data.train[i].n_target for b in window for i in b)
        mine = rank_share(window, ranks)
        passes = passes_per_rank(window, ranks.world) if ranks.distributed else len(mine)
        loss_sum, counts = 0.0, [0, 0, 0]
        for k in range(passes):
            index, ids = mine[k] if k < len(mine) else (-1, window[0][:1])  # -1: a pass that counts 0
            batch = collate([data.train[i] for i in ids], pad_id, pad_to)
            # dropout draws depend on the step and the micro-batch only: a resumed run, or another
            # number of ranks training the same micro-batch, draws the same masks
            torch.manual_seed(_micro_seed(cfg.seed, state.step, index))
            last = k == passes - 1
            with (step_loss.no_sync() if ranks.distributed and not last else nullcontext()):
                with autocast_for(device, precision):
                    part = step_loss(batch)
                weight = ranks.world / n_target if index >= 0 else 0.0  # DDP averages over ranks
                scaled = part * weight
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if index >= 0:
                loss_sum += part.item()
                counts = [counts[0] + batch["n_tokens"], counts[1] + batch["n_slots"],
                          counts[2] + batch["n_target"]]
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_sum, counts

    def record_step(loss: float, lr: float, n_windows: int) -> bool:
        """Log the step just taken and move the loop position on; True at the end of an epoch."""
        state.window += 1
        state.log.append({"step": state.step, "epoch": round(state.epoch + state.window / n_windows, 4),
                          "loss": round(loss, 6), "lr": lr, "tokens": state.tokens,
                          "seconds": round(elapsed(), 2)})
        if progress is not None:
            progress.advance(loss, state.tokens / max(state.train_seconds, 1e-9))
        if state.window < n_windows:
            return False
        state.epoch, state.window, state.epoch_batches = state.epoch + 1, 0, []
        evaluate_now()
        return True

    if state.step == 0 and not state.evals:
        evaluate_now()  # the held-out loss before any training, for the curve

    progress = ProgressBar(console, cfg, total_steps, state.step) if cfg.progress and ranks.main else None
    loss_of.train()
    loop_started = time.perf_counter()
    with stop_requests(say, cfg.module) as stop, progress or nullcontext():
        for window, n_windows in _windows_left(state, lengths, cfg, epochs, total_steps):
            t0 = time.perf_counter()
            loss_sum, counts = optimizer_step(window)
            stopping = bool(stop)
            if ranks.distributed:  # the step's totals, and whether any rank was asked to stop
                loss_sum, *counts, stopping = all_sum([loss_sum, *counts, float(stopping)])
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            state.tokens, state.slots, state.target_tokens = (
                int(a + b) for a, b in zip((state.tokens, state.slots, state.target_tokens), counts))
            state.train_seconds += time.perf_counter() - t0
            state.step += 1
            loss = loss_sum / sum(data.train[i].n_target for b in window for i in b)
            if not math.isfinite(loss):
                raise TmdError(f"{cfg.module}: training loss became {loss} at step {state.step}; "
                               "lower --lr or use --precision fp32")
            end_of_epoch = record_step(loss, lr, n_windows)
            if checkpoint_due(end_of_epoch) or stopping:
                saved = checkpoint()
                if progress is None:  # logs only: a line per checkpoint says how far it got
                    say(status_line(cfg.module, state, total_steps, resumed_from, loop_started, saved),
                        highlight=False, soft_wrap=True)
            if stopping:
                barrier()  # rank 0's checkpoint is on disk before any rank reports the stop
                why = stop[0] if stop else "a signal to another rank"
                raise TmdError(f"{cfg.module}: stopped by {why} at step {state.step}/{total_steps}; "
                               f"checkpoint {saved} saved, the same command resumes from it")
            if on_step is not None:
                on_step(state)

    if not state.evals or state.evals[-1]["step"] != state.step:
        evaluate_now()  # a max_steps stop inside an epoch
    state.wall_seconds = elapsed()
    state.peak_rss_mb = max(state.peak_rss_mb, peak_rss_mb())
    rank_rss = all_gather_floats(state.peak_rss_mb) if ranks.distributed else [state.peak_rss_mb]
    metrics = run_metrics(cfg, state, data, lengths, device, precision, threads, total_steps, resumed_from)
    metrics.update(ranks=ranks.world, peak_rss_mb_per_rank=[round(r, 1) for r in rank_rss],
                   chunked_loss=chunked)
    if ranks.main:
        write_outputs(cfg, model, tokenizer, data, metrics, state, fingerprint, targets, precision, device,
                      ranks.world)
        if not cfg.keep_checkpoints_after and ckpts.root.exists():
            shutil.rmtree(ckpts.root)
    barrier()  # the outputs exist before any rank returns
    say(_done_line(cfg.module, metrics, out), highlight=False)
    return TrainResult(cfg.module, out, resumed_from=resumed_from, metrics=metrics)


def train_rank(rank: int, world: int, rendezvous: str, cfg: TrainConfig, resume: bool | None,
               fresh: bool) -> None:
    """One rank of `tmd train --nproc N` (trainer.distributed.launch starts it in a fresh process)."""
    from tmd_local.terminal.console import err_console

    from .distributed import init, shutdown

    init(pick_device(cfg)[0].type, rendezvous, rank, world)
    try:
        train(cfg, resume=resume, fresh=fresh, console=err_console if rank == 0 else None)
    finally:
        shutdown()


def _clear(ckpts: Checkpoints, out: Path) -> None:
    """--fresh: drop the checkpoints and any finished run's tmd.json (the rest is overwritten)."""
    if ckpts.root.exists():
        shutil.rmtree(ckpts.root)
    (out / DONE_FILE).unlink(missing_ok=True)


def _schedule(cfg: TrainConfig, lengths: list[int]) -> tuple[int, int, int]:
    """(steps per epoch, total steps, epochs begun): --max-steps may end the run inside an epoch."""
    batches0 = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, 0)
    steps_per_epoch = math.ceil(len(batches0) / cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    return steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch)


def _done_line(module: str, metrics: dict, out: Path) -> str:
    """The run's last line: time, first and last loss, held-out loss, speed, memory, where it went."""
    return (f"[green]{module}[/green]: done in {metrics['wall_seconds']:.0f}s, loss "
            f"{metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f}"
            + (f", held-out {metrics['eval_loss']:.3f}" if metrics["eval_loss"] is not None else "")
            + f", {metrics['tokens_per_second']:.0f} tok/s, peak RSS {metrics['peak_rss_mb']:.0f} MB -> {out}")


def _optimizer(cfg: TrainConfig, params: list, total_steps: int):
    """AdamW (no weight decay on vectors) and transformers' linear schedule with warm-up, written out."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps)

    def linear(step: int) -> float:
        if step < cfg.warmup_steps:
            return step / max(1, cfg.warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - cfg.warmup_steps))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, linear)


def _micro_seed(seed: int, step: int, index: int) -> int:
    """The RNG seed of micro-batch `index` of optimizer step `step` (index -1: a zero-weight pass)."""
    return (seed * 1_000_003 + step * 1_009 + index + 1) % 2**63


def _windows_left(state: LoopState, lengths: list[int], cfg: TrainConfig, epochs: int, total_steps: int):
    """The accumulation windows still to train, from where `state` stands, each as (its batches,
    windows in its epoch). The caller moves state.window and state.epoch on as it trains them; each
    epoch gets its own batch order, kept in the state so a resumed run continues the same one."""
    while state.epoch < epochs and state.step < total_steps:
        if state.window == 0 or not state.epoch_batches:
            state.epoch_batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, state.epoch)
        windows = [state.epoch_batches[i:i + cfg.grad_accum]
                   for i in range(0, len(state.epoch_batches), cfg.grad_accum)]
        epoch = state.epoch
        while state.epoch == epoch and state.window < len(windows) and state.step < total_steps:
            yield windows[state.window], len(windows)
