"""Training tokens/s (real tokens, padding excluded) and padded-token ratio of a few LoRA optimizer
steps of one module on the embedded model (its dequantized HF copy in models/base/).

    .venv/bin/python scripts/bench/training_speed.py [--train-steps 3] [--train-module reasoner] [--json out.json]

Compares dynamic padding vs padding every batch to --train-max-length (512, as the paper did), on
gold-teacher data for StrategyQA train questions written to a temporary folder (`tmd teach
--teacher gold`); the LM head applied only at positions that predict a target token
(logits_to_keep, the trainer's way) vs at every position, with dynamic padding both times: the
same loss, less work; and two one-thread trainings at once (how scripts/distill_strategyqa.sh
trains) vs one using every core. Each training runs in a fresh subprocess so its peak RSS is its
own. Load average is printed with the figures: on shared cores, tokens/s say as much about the
neighbours as about tmd. Precision and loss-path variants: scripts/bench/training_precision.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside it, also when a test loads this file
from common import (  # noqa: E402
    EMBEDDED, child_command, child_figures, finish, gold_teacher_data, new_parser, parse, print_child,
    ratio, run_child, run_quiet, start_figures, yes)
from tmd_local.core.memory import peak_rss_mb  # noqa: E402
from tmd_local.core.roles import ROLES  # noqa: E402


# --- 4. training speed: dynamic padding vs pad-to-max, LM head on targets vs everywhere ---------

TRAIN_MODES = ("dynamic", "pad_to_max", "full_head")
TRAIN_KEYS = ("steps", "tokens_trained", "token_slots", "padded_token_ratio", "tokens_per_second",
              "train_seconds", "wall_seconds", "peak_rss_mb", "threads", "device", "precision")


def part_training(args) -> dict:
    """(subprocess) A few LoRA steps of one module through the trainer's Python API."""
    from tmd_local.core.memory import reset_peak_rss
    from trainer.config import TrainConfig
    from trainer.train import train

    reset_peak_rss()
    cfg = TrainConfig(module=args.train_module, data=Path(args.train_data), out=Path(args.train_out),
                      max_steps=args.train_steps, max_length=args.train_max_length,
                      pad_to_max=args.pad_to_max, head_on_targets_only=not args.full_head,
                      threads=args.threads, progress=False,
                      eval_fraction=0.0,  # no held-out passes: they would only add wall time
                      save_every=0)  # checkpoints at epoch ends only
    metrics = train(cfg, fresh=True).metrics
    figures = {k: metrics[k] for k in TRAIN_KEYS} | {"examples": metrics["examples"]["train"],
                                                     "process_peak_rss_mb": round(peak_rss_mb(), 1)}
    figures["tokens_per_second"] = round(figures["tokens_per_second"], 1)
    return figures


def training(args, tmp: Path) -> dict:
    teacher = gold_teacher_data(tmp, args.train_questions)
    _ensure_base()  # a fresh machine dequantizes the GGUF once here, not inside the first timed run
    out = {"module": args.train_module, "questions": args.train_questions, "max_length": args.train_max_length}
    # full_head: dynamic padding, but the LM head over every position (what logits_to_keep saves)
    for mode in TRAIN_MODES:
        started = time.perf_counter()
        flags = {"pad_to_max": ["--pad-to-max"], "full_head": ["--full-head"]}.get(mode, [])
        out[mode] = run_child("part training", child_command(
            __file__, args, *_training_child_args(args, teacher, tmp / f"adapter-{mode}"), *flags))
        out[mode]["process_wall_seconds"] = round(time.perf_counter() - started, 2)
        print(f"   {mode}: {out[mode]['process_wall_seconds']:.1f} s", file=sys.stderr, flush=True)
    out["parallel"] = _parallel_trainings(args, teacher, tmp)
    out["same_tokens_trained"] = out["dynamic"]["tokens_trained"] == out["pad_to_max"]["tokens_trained"]
    out["speedup_dynamic"] = round(out["dynamic"]["tokens_per_second"] / out["pad_to_max"]["tokens_per_second"], 3)
    out["speedup_head_on_targets"] = round(out["dynamic"]["tokens_per_second"]
                                           / out["full_head"]["tokens_per_second"], 3)
    return out


def _training_child_args(args, teacher: Path, adapter_out: Path) -> list[str]:
    """What every part-4 training child is given: the data, its own output folder, module, steps, length."""
    return ["--train-data", str(teacher), "--train-out", str(adapter_out), "--train-module", args.train_module,
            "--train-steps", str(args.train_steps), "--train-max-length", str(args.train_max_length)]


def _parallel_trainings(args, teacher: Path, tmp: Path, jobs: int = 2) -> dict:
    """`jobs` one-thread trainings at once, as scripts/distill_strategyqa.sh trains its modules:
    tokens of all of them over the longest one's training seconds."""
    started = time.perf_counter()
    children = [subprocess.Popen(
        child_command(__file__, args, *_training_child_args(args, teacher, tmp / f"adapter-job{k}"), threads=1),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(jobs)]
    outputs = [c.communicate() for c in children]  # waits: returncode is set only after this
    each = [child_figures("part training", c.returncode, *out) for c, out in zip(children, outputs)]
    tokens = sum(e["tokens_trained"] for e in each)
    seconds = max(e["train_seconds"] for e in each)
    print(f"   {jobs} jobs x 1 thread: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return {"jobs": jobs, "threads_each": 1, "tokens_per_second": round(tokens / seconds, 1),
            "each_tokens_per_second": [e["tokens_per_second"] for e in each],
            "peak_rss_mb_each": [e["process_peak_rss_mb"] for e in each]}


def _ensure_base() -> None:
    run_quiet([sys.executable, "-c", f"from tmd_local.core.hf_base import ensure_hf_base; ensure_hf_base({EMBEDDED!r})"])


# --- printing ---------------------------------------------------------------------------------

def _print_training(t: dict) -> None:
    d = t["dynamic"]
    print(f"4. Training {t['module']} (LoRA, {d['steps']} optimizer steps, {d['examples']} examples from the gold "
          f"teacher on {t['questions']} StrategyQA train questions; {d['device']} {d['precision']}, "
          f"torch threads {d['threads']}), each in a fresh process")
    for mode in TRAIN_MODES:
        m = t[mode]
        label = {"dynamic": "dynamic", "pad_to_max": f"pad to {t['max_length']}",
                 "full_head": "full head"}[mode]
        print(f"   {label:10s}: {m['tokens_per_second']:.0f} tok/s (real tokens; {m['tokens_trained']} in "
              f"{m['train_seconds']:.1f} s), padded {m['padded_token_ratio']:.1%} of {m['token_slots']} slots, "
              f"peak RSS {m['process_peak_rss_mb']:.0f} MiB, wall {m['process_wall_seconds']:.1f} s")
    print(f"   dynamic / pad-to-max tok/s: {t['speedup_dynamic']:.2f}; "
          f"same tokens trained: {t['same_tokens_trained']}")
    print(f"   LM head on target positions / on every position (both dynamic) tok/s: "
          f"{t['speedup_head_on_targets']:.2f}")
    par = t["parallel"]
    print(f"   {par['jobs']} trainings at once, 1 thread each: {par['tokens_per_second']:.0f} tok/s together "
          f"({', '.join(f'{x:.0f}' for x in par['each_tokens_per_second'])} each) vs one with "
          f"{d['threads']} threads {d['tokens_per_second']:.0f}")


def _rows_training(t: dict) -> list[tuple[str, ...]]:
    d, p = t["dynamic"], t["pad_to_max"]
    rss, wall = "process_peak_rss_mb", "process_wall_seconds"
    return [("4", "training tok/s (real tokens)", f"dynamic {d['tokens_per_second']:.0f}",
             f"pad to {t['max_length']} {p['tokens_per_second']:.0f}", f"{t['speedup_dynamic']:.2f}",
             f"same tokens trained {yes(t['same_tokens_trained'])}"),
            ("4", "training tok/s, LM head", f"target positions {d['tokens_per_second']:.0f}",
             f"every position {t['full_head']['tokens_per_second']:.0f}", f"{t['speedup_head_on_targets']:.2f}",
             "same loss (tests/trainer)"),
            ("4", "training tok/s, all cores", f"{t['parallel']['jobs']} jobs x 1 thread "
             f"{t['parallel']['tokens_per_second']:.0f}", f"1 job x {d['threads']} threads {d['tokens_per_second']:.0f}",
             f"{t['parallel']['tokens_per_second'] / d['tokens_per_second']:.2f}", "scripts/distill_strategyqa.sh"),
            ("4", "padded-token ratio", f"{d['padded_token_ratio']:.1%}", f"{p['padded_token_ratio']:.1%}", "", ""),
            ("4", "training peak RSS", f"{d[rss]:.0f} MiB", f"{p[rss]:.0f} MiB", ratio(d[rss], p[rss]), ""),
            ("4", "training process wall", f"{d[wall]:.1f} s", f"{p[wall]:.1f} s", ratio(d[wall], p[wall]),
             f"{d['steps']} steps, load + train + save")]


def parse_args():
    parser = new_parser(__doc__, generation=False)
    parser.add_argument("--train-module", default="reasoner", choices=list(ROLES), help="module trained")
    parser.add_argument("--train-steps", type=int, default=3, help="optimizer steps per training run")
    parser.add_argument("--train-questions", type=int, default=50,
                        help="StrategyQA train questions the gold teacher writes training data for")
    parser.add_argument("--train-max-length", type=int, default=512,
                        help="max tokens per example, and what pad-to-max pads to")
    for hidden in ("--train-data", "--train-out"):  # a child's data and output folder
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--pad-to-max", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--full-head", action="store_true", help=argparse.SUPPRESS)
    return parse(parser)


def main() -> None:
    args = parse_args()
    if args.child:  # one training, its figures as the last line
        print_child(part_training(args))
        return
    figures = start_figures(args)
    with tempfile.TemporaryDirectory(prefix="tmd-bench-") as tmp:
        figures["training"] = training(args, Path(tmp))
    _print_training(figures["training"])
    finish(figures, args, _rows_training(figures["training"]))


if __name__ == "__main__":
    main()
