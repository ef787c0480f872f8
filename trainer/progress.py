"""What a running training shows and listens to: a progress bar (or, in logs, a status line per
checkpoint) and the polite stop that SIGTERM or SIGINT asks for."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .checkpoint import LoopState
from .config import TrainConfig


class ProgressBar:
    """A rich progress bar: step M/N, loss, tokens/s, elapsed and ETA (on stderr)."""

    def __init__(self, console, cfg: TrainConfig, total: int, done: int):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        columns = [TextColumn("[b]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=console or Console(stderr=True))
        self.task = self.bar.add_task(cfg.module, total=total, completed=done, loss="-", speed="-")
        self.bar.start()

    def advance(self, loss: float, speed: float) -> None:
        self.bar.update(self.task, advance=1, loss=f"{loss:.3f}", speed=f"{speed:.0f}")

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()


def status_line(module: str, state: LoopState, total_steps: int, resumed_from: int, loop_started: float,
                saved: Path) -> str:
    """`drd: step 76/570 (epoch 0.40), loss 1.278, 105 tok/s, ETA 3h41m, saved step-000076`: the
    loss averages the last 10 steps; the ETA extrapolates this process's own pace."""
    done_here = state.step - resumed_from
    recent = [s["loss"] for s in state.log[-10:]]
    per_step = (time.perf_counter() - loop_started) / max(1, done_here)
    eta = int(per_step * (total_steps - state.step))
    speed = state.tokens / max(state.train_seconds, 1e-9)
    return (f"{module}: step {state.step}/{total_steps} (epoch {state.log[-1]['epoch']:.2f}), loss "
            f"{sum(recent) / len(recent):.3f}, {speed:.0f} tok/s, ETA {eta // 3600}h{eta % 3600 // 60:02d}m, "
            f"saved {saved.name}")


@contextmanager
def stop_requests(say, module: str):
    """A list that SIGTERM or SIGINT fills with the signal's name: the loop then checkpoints and stops
    after the step under way, so a polite kill loses nothing. A second signal acts as usual at once.
    Outside the main thread (where handlers cannot be set) the list just stays empty."""
    requested: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    # a signal the parent chose to ignore (SIGINT of a shell's background job) stays ignored
    previous = {sig: old for sig, old in previous.items() if old is not signal.SIG_IGN}

    def handler(signum, frame):
        if requested:  # asked twice: the usual behaviour, now
            signal.signal(signum, previous[signum] or signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        requested.append(signal.Signals(signum).name)
        say(f"[yellow]{module}[/yellow]: {requested[0]}: checkpointing after this step, then stopping "
            "(send it again to stop at once)", highlight=False, soft_wrap=True)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old or signal.SIG_DFL)
