"""Training figures for trainer/README.md: tokens/s, peak RSS and held-out loss per precision and
loss path, one process vs 2 ranks x 1 thread, and a profile of one training step.

    .venv/bin/python scripts/bench/training_precision.py [--steps 3] [--module reasoner] [--json out.json]

Every run trains the same LoRA steps of one module (default: the Reasoner, batch 2 x accum 4,
max length 512) on gold-teacher data for StrategyQA train questions (`tmd teach --teacher gold`,
written to a temporary folder), from the embedded model's dequantized copy, each in a fresh
process so its peak RSS is its own. Held-out loss: on the run's own held-out questions after the
same steps. Variants:

    fp32             the pre-#25 default: fp32, the LM head from the first target on (logits_to_keep),
                     glibc's default malloc behaviour
    fp32+chunked     the saved-compute change: the head on target rows only, in slices
                     (trainer.loss._HeadLoss): the default on a CPU without bf16 units
    +ac              ... and --low-memory: activation checkpointing, large freed tensors returned
                     to the system (trainer.device.return_freed_memory)
    bf16             frozen base stored in bf16, LoRA + AdamW fp32, autocast; head and malloc as fp32's
    bf16+chunked     bf16 with the saved-compute change: the default where the CPU has bf16 units

bf16 runs are left out on a CPU without bf16 units (no avx512_bf16/amx_bf16 flag): PyTorch emulates
bf16 matmuls there, tens of times slower than fp32 (a probe matmul's GFLOPS are printed), unless
--bf16-anyway. `--base DIR` takes another HF folder (e.g. a random model of the same shape).
Load average is printed: on shared cores, tokens/s say as much about the neighbours as about tmd.
Dynamic padding vs pad-to-max, and the LM head on targets vs everywhere: training_speed.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside it
from common import EMBEDDED, gold_teacher_data, loadavg, run_child  # noqa: E402

VARIANTS = {  # name: (precision, chunked loss, --low-memory: activation checkpointing + freed memory returned)
    "fp32": ("fp32", False, False),
    "fp32+chunked": ("fp32", True, False),
    "fp32+chunked+ac": ("fp32", True, True),
    "bf16": ("bf16", False, False),
    "bf16+chunked": ("bf16", True, False),
    "bf16+chunked+ac": ("bf16", True, True),
}
KEYS = ("steps", "tokens_trained", "tokens_per_second", "train_seconds", "eval_loss", "precision",
        "threads", "ranks", "peak_rss_mb_per_rank", "chunked_loss")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="reasoner")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    parser.add_argument("--questions", type=int, default=50, help="StrategyQA train questions")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--eval-fraction", type=float, default=0.1)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--ranks", default="1,2", help="rank counts to run each variant with (2 = 2 ranks x 1 thread)")
    parser.add_argument("--base", default=EMBEDDED, help="registry name or HF folder of the student")
    parser.add_argument("--data", type=Path, default=None, help="a teacher folder to use instead of gold data")
    parser.add_argument("--bf16-anyway", action="store_true", help="run bf16 variants without bf16 units")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one run, in a subprocess
    return parser.parse_args()


# --- one run (a subprocess) ------------------------------------------------------------------

def child(spec: dict) -> dict:
    from tmd_local.core.memory import peak_rss_mb
    from trainer.config import TrainConfig

    precision, chunked, ac = VARIANTS[spec["variant"]]
    cfg = TrainConfig(module=spec["module"], data=Path(spec["data"]), out=Path(spec["out"]), base=spec["base"],
                      max_steps=spec["steps"], max_length=spec["max_length"], precision=precision,
                      chunked_loss=chunked, release_memory=ac, activation_checkpointing=ac, eval_fraction=spec["eval_fraction"],
                      save_every=0, save_minutes=0, progress=False,
                      threads=1 if spec["ranks"] > 1 else None)
    if spec.get("profile"):
        return {"profile": profile_step(cfg)}
    if spec["ranks"] > 1:
        from trainer.distributed import launch
        from trainer.train import train_rank

        launch(spec["ranks"], train_rank, cfg, None, True)
        metrics = json.loads((cfg.out / "metrics.json").read_text())
    else:
        from trainer.train import train

        metrics = train(cfg, fresh=True).metrics
        metrics["peak_rss_mb_per_rank"] = [round(peak_rss_mb(), 1)]
    return {k: metrics.get(k) for k in KEYS}


def profile_step(cfg) -> str:
    """torch.profiler over one training step (forward + backward of one micro-batch, after one
    unmeasured step): the ops that took the most CPU time."""
    from torch.profiler import ProfilerActivity, profile

    from trainer.data import collate, length_grouped_batches, prepare
    from trainer.device import autocast_for, pick_device, set_threads
    from trainer.loss import TargetLoss, supports_chunked_loss, supports_logits_to_keep
    from trainer.model import load_model

    device, precision = pick_device(cfg)
    set_threads(cfg)
    data = prepare(cfg)
    model, _ = load_model(cfg, data.base_dir, device, precision)
    loss = TargetLoss(model, device, supports_logits_to_keep(model), cfg.chunked_loss and supports_chunked_loss(model))
    loss.train()
    lengths = [len(e) for e in data.train]
    batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, 0)
    longest = max(batches, key=lambda b: max(lengths[i] for i in b))
    pad = data.tokenizer.pad_token_id
    batch = collate([data.train[i] for i in longest], pad)

    def step():
        with autocast_for(device, precision):
            value = loss(batch)
        value.backward()
        model.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    width = batch["input_ids"].shape
    head = f"one step, batch {width[0]} x {width[1]} tokens, {precision}, chunked loss {loss.chunked}"
    return head + "\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40)


# --- the driver ------------------------------------------------------------------------------

def bf16_units() -> bool:
    from trainer.device import cpu_has_bf16_units

    return cpu_has_bf16_units()


def matmul_gflops() -> dict:
    """fp32 vs bf16 GFLOPS of a 1024^3 matmul on this CPU (the torch threads default)."""
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        a @ b
        started, n = time.perf_counter(), 0
        while time.perf_counter() - started < 1.0:
            a @ b
            n += 1
        out[name] = round(2 * 1024**3 * n / (time.perf_counter() - started) / 1e9, 1)
    return out


def run_spec(spec: dict) -> dict:
    """One run in a fresh process (this script with --child), so its peak RSS is its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    return run_child(f"run {spec['variant']} x {spec['ranks']}", cmd)


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    from tmd_local.core.hf_base import ensure_hf_base

    ensure_hf_base(args.base)  # dequantized once here, not inside the first timed run
    units = bf16_units()
    figures = {"machine": {"cpus": os.cpu_count(), "bf16_units": units, "matmul_gflops": matmul_gflops(),
                           "loadavg_start": loadavg()},
               "module": args.module, "steps": args.steps, "max_length": args.max_length, "runs": {}}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not units and not args.bf16_anyway:
        variants = [v for v in variants if not v.startswith("bf16")]
    ranks = [int(r) for r in args.ranks.split(",")]
    with tempfile.TemporaryDirectory(prefix="tmd-bench-train-") as tmp:
        data = args.data or gold_teacher_data(Path(tmp), args.questions)
        common = dict(module=args.module, data=str(data), base=args.base, steps=args.steps,
                      max_length=args.max_length, eval_fraction=args.eval_fraction)
        # interleaved: 1 process and 2 ranks of a variant back to back, so a change in the
        # neighbours' load hits both alike
        for variant in variants:
            for n in ranks:
                started = time.perf_counter()
                spec = dict(common, variant=variant, ranks=n, out=str(Path(tmp) / f"{variant}-{n}"))
                figures["runs"][f"{variant} x{n}"] = run_spec(spec) | {
                    "process_wall_seconds": round(time.perf_counter() - started, 1),
                    "loadavg": round(os.getloadavg()[0], 2)}
                print(f"   {variant} x{n} rank(s): {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if not args.no_profile:
            default = "bf16+chunked" if units else "fp32+chunked"
            spec = dict(common, variant=default, ranks=1, out=str(Path(tmp) / "profile"), profile=True)
            figures["profile"] = run_spec(spec)["profile"]
    figures["machine"]["loadavg_end"] = loadavg()
    show(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def show(f: dict) -> None:
    m = f["machine"]
    g = m["matmul_gflops"]
    print(f"Training {f['module']}: {f['steps']} LoRA steps (batch 2 x accum 4, max length {f['max_length']}) "
          f"per run, each in a fresh process; {m['cpus']} CPUs, bf16 units: {'yes' if m['bf16_units'] else 'no'} "
          f"(1024^3 matmul: fp32 {g['fp32']} GFLOPS, bf16 {g['bf16']})")
    runs = f["runs"]
    base = next((r for name, r in runs.items() if name == "fp32 x1"), None)
    print(f"{'run (x ranks)':24s} {'tok/s':>7s} {'vs fp32':>8s} {'peak RSS MiB (per rank)':>24s} {'held-out':>9s} "
          f"{'Δ fp32':>8s} {'load':>5s}")
    for name, r in runs.items():
        ratio = f"{r['tokens_per_second'] / base['tokens_per_second']:.2f}x" if base else "-"
        delta = f"{r['eval_loss'] - base['eval_loss']:+.4f}" if base and r["eval_loss"] is not None else "-"
        rss = "/".join(f"{x:.0f}" for x in r["peak_rss_mb_per_rank"])
        loss = f"{r['eval_loss']:.4f}" if r["eval_loss"] is not None else "-"
        print(f"{name:24s} {r['tokens_per_second']:7.1f} {ratio:>8s} {rss:>24s} {loss:>9s} {delta:>8s} "
              f"{r.get('loadavg', 0):5.1f}")
    print("tok/s: real tokens of all ranks over rank 0's training seconds; load: 1-min load average at the "
          "run's end; vs fp32 / Δ fp32: against fp32 x1, the pre-#25 default")
    if "profile" in f:
        print("\ntorch.profiler, " + f["profile"])
    print(f"load average: start {m['loadavg_start']}, end {m['loadavg_end']} on {m['cpus']} CPUs")


if __name__ == "__main__":
    main()
