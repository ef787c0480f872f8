"""Runtime figures for the README: residency, module switch time, stage batching.

    .venv/bin/python scripts/bench_runtime.py [--questions 50] [--threads N] [--json out.json]

1. Peak RSS of one TMD question with one module resident at a time vs all three kept loaded
   (three distinct GGUF files: copies of the embedded model, so three modules really take memory).
2. Module switch time: close + reload (a merged module, and base + LoRA adapter) vs swapping a
   LoRA adapter on the resident base (llama_set_adapters_lora). The adapters are small synthetic
   LoRAs for the embedded model (tests/runtime/lora_gguf.py) until `tmd export` produces real ones.
3. Stage-batched (one load per stage per batch of questions) vs per-question (one load per stage
   per question) over StrategyQA test questions, interleaved batch by batch so that a change in
   the machine's load hits both alike; also checks both give the same outputs.
Each residency measurement runs in a fresh subprocess so its peak RSS is its own. Load average is
printed with the figures: on shared cores, wall times say as much about the neighbours as about tmd.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

from tmd_local.memory import peak_rss_mb, rss_mb  # noqa: E402
from tmd_local.pipeline import ModuleSet, run  # noqa: E402
from tmd_local.registry import ModelRef, resolve_model  # noqa: E402
from tmd_local.runner import GenerationSettings, ModulePool, ModuleRef  # noqa: E402

QUESTION_ID = "demo-plants"  # greedy decoding decomposes it, so all three modules run


def settings_from(args) -> GenerationSettings:
    settings = GenerationSettings(n_ctx=args.n_ctx)
    if args.threads:
        settings.n_threads = args.threads
    settings.max_tokens = {"analyzer": args.analyzer_tokens, "informant": args.informant_tokens,
                           "reasoner": args.reasoner_tokens, "drd": args.reasoner_tokens}
    return settings


# --- 1. residency -----------------------------------------------------------------------------

def part_residency(args) -> dict:
    """(subprocess) One TMD question over three module files; peak RSS of this whole process."""
    from tmd_local.demo import DEMO_QUESTIONS

    files = [Path(p) for p in args.files]
    refs = [ModelRef(p, p.stem) for p in files]
    modules = ModuleSet(refs[0], refs[1], refs[2], refs[0], label="three files")
    question = next(q for q in DEMO_QUESTIONS if q.id == QUESTION_ID)
    start_rss = rss_mb()
    with ModulePool(settings_from(args), keep_loaded=args.keep_loaded) as pool:
        started = time.perf_counter()
        trace = run("tmd", [question], modules, pool=pool)[0]
        seconds = time.perf_counter() - started
        resident_at_end = len(pool.resident)
    return {"keep_loaded": args.keep_loaded, "process_peak_rss_mb": round(peak_rss_mb(), 1),
            "rss_at_start_mb": round(start_rss, 1), "seconds": round(seconds, 2),
            "modules_resident_at_end": resident_at_end, "stages": list(trace.stages),
            "residency": [r.to_dict() for r in pool.history]}


def residency(args, tmp: Path) -> dict:
    model = resolve_model("smollm2-135m-instruct")
    files = []
    for role in ("analyzer", "informant", "reasoner"):
        shutil.copyfile(model.path, tmp / f"{role}.gguf")
        files.append(str(tmp / f"{role}.gguf"))
    out = {}
    for keep in (False, True):
        out["keep_loaded" if keep else "one_at_a_time"] = _subprocess(
            args, "residency", *(["--keep-loaded"] if keep else []), "--files", *files)
    return out


# --- 2. switch time ---------------------------------------------------------------------------

def switch_times(args, tmp: Path) -> dict:
    from lora_gguf import write_lora

    model = resolve_model("smollm2-135m-instruct")
    settings = settings_from(args)
    adapters = [write_lora(model.path, tmp / f"{n}.lora.gguf", scale=0.05, seed=i)
                for i, n in enumerate(("analyzer", "informant", "reasoner"))]
    adapter_refs = [ModuleRef(model.path, a.stem, adapter=a) for a in adapters]
    rounds = args.switch_rounds

    def timed_uses(pool, refs) -> list[float]:
        times = []
        for i in range(rounds * len(refs)):
            ref = refs[i % len(refs)]
            started = time.perf_counter()
            with pool.use(ref.name, ref):
                pass  # one module per stage: the switch is what it takes to get it ready
            times.append(time.perf_counter() - started)
        return times

    reload_plain = timed_uses(ModulePool(settings), [model])
    reload_adapter = timed_uses(ModulePool(settings), adapter_refs)
    with ModulePool(settings, keep_loaded=True) as pool:
        with pool.use("base", model):
            pass  # loading the base itself is not a switch
        swap = timed_uses(pool, adapter_refs)
        swaps = [r.load_seconds for r in pool.history if r.how == "swap"]
        first_swaps, later_swaps = swaps[:len(adapter_refs)], swaps[len(adapter_refs):]

    def ms(values) -> dict:
        return {"mean_ms": round(1000 * statistics.mean(values), 4),
                "min_ms": round(1000 * min(values), 4), "n": len(values)}

    return {"reload_merged_module": ms(reload_plain), "reload_base_plus_adapter": ms(reload_adapter),
            "swap_adapter_first_time": ms(first_swaps), "swap_adapter_initialized": ms(later_swaps),
            "swap_use_wall_initialized": ms(swap[len(adapter_refs):]),
            "adapter_file_mb": round(adapters[0].stat().st_size / 2**20, 2)}


# --- 3. stage batching ------------------------------------------------------------------------

def batching(args) -> dict:
    """Stage-batched vs per-question over the same questions, interleaved chunk by chunk (batch =
    chunk) with alternating order, so a change in the machine's load hits both modes alike."""
    from tmd_local.datasets import load_questions

    questions, report = load_questions("strategyqa", "test", limit=args.questions, hub=False)
    modules = ModuleSet.single(resolve_model("smollm2-135m-instruct"))
    settings = settings_from(args)
    size = args.batch_size or len(questions)
    chunks = [questions[i:i + size] for i in range(0, len(questions), size)]
    totals = {m: {"seconds": 0.0, "loads": 0, "load_seconds": 0.0, "generation_seconds": 0.0, "traces": []}
              for m in MODES}
    for k, chunk in enumerate(chunks):
        for mode in (MODES if k % 2 == 0 else MODES[::-1]):
            pool = ModulePool(settings)
            started = time.perf_counter()
            if mode == "stage_batched":
                traces = run("tmd", chunk, modules, pool=pool)
            else:
                traces = [run("tmd", [q], modules, pool=pool)[0] for q in chunk]
            t = totals[mode]
            t["seconds"] += time.perf_counter() - started
            t["loads"] += len(pool.history)
            t["load_seconds"] += sum(r.load_seconds for r in pool.history)
            t["generation_seconds"] += sum(s.seconds for tr in traces for s in tr.stages.values())
            t["traces"] += traces
            print(f"   chunk {k + 1}/{len(chunks)} {mode}: {time.perf_counter() - started:.1f} s",
                  file=sys.stderr, flush=True)
    out = {"questions": len(questions), "batch_size": size, "source": report.source}
    for mode, t in totals.items():
        traces = t.pop("traces")
        out[mode] = {**{k: round(v, 2) for k, v in t.items()},
                     "seconds_per_question": round(t["seconds"] / len(questions), 2),
                     "correct": sum(bool(tr.correct) for tr in traces)}
        out[mode]["raw"] = [tr.to_dict()["raw"] for tr in traces]
    out["identical_outputs"] = out["stage_batched"].pop("raw") == out["per_question"].pop("raw")
    return out


MODES = ("stage_batched", "per_question")


# --- driver -----------------------------------------------------------------------------------

def _subprocess(args, part: str, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--threads", str(args.threads or 0),
           "--n-ctx", str(args.n_ctx), "--analyzer-tokens", str(args.analyzer_tokens),
           "--informant-tokens", str(args.informant_tokens),
           "--reasoner-tokens", str(args.reasoner_tokens), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=50, help="StrategyQA test questions for part 3")
    parser.add_argument("--batch-size", type=int, default=10,
                        help="questions per stage batch in part 3 (0: all in one batch)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--analyzer-tokens", type=int, default=128)
    parser.add_argument("--informant-tokens", type=int, default=128)
    parser.add_argument("--reasoner-tokens", type=int, default=320)
    parser.add_argument("--switch-rounds", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[], choices=["residency", "switch", "batching"])
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--keep-loaded", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.threads = args.threads or None
    if args.part == "residency":
        print(json.dumps(part_residency(args)))
        return

    settings = settings_from(args)
    figures = {"machine": {"cpus": os.cpu_count(), "threads": settings.n_threads,
                           "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
               "settings": {"n_ctx": settings.n_ctx, "max_tokens": settings.max_tokens}}
    with tempfile.TemporaryDirectory(prefix="tmd-bench-") as tmp:
        if "residency" not in args.skip:
            figures["residency"] = residency(args, Path(tmp))
            _print_residency(figures["residency"])
        if "switch" not in args.skip:
            figures["switch"] = switch_times(args, Path(tmp))
            _print_switch(figures["switch"])
        if "batching" not in args.skip:
            figures["batching"] = batching(args)
            _print_batching(figures["batching"])
    figures["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average: start {figures['machine']['loadavg_start']}, end {figures['machine']['loadavg_end']} "
          f"on {os.cpu_count()} CPUs, {settings.n_threads} llama.cpp threads")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures: {args.json}")


def _print_residency(r: dict) -> None:
    one, keep = r["one_at_a_time"], r["keep_loaded"]
    print("1. Peak RSS, one TMD question, three module files (copies of the embedded Q4_1 model)")
    print(f"   one module at a time: {one['process_peak_rss_mb']:.0f} MiB "
          f"(stages: {', '.join(one['stages'])}; {one['seconds']:.1f} s)")
    print(f"   all three kept loaded: {keep['process_peak_rss_mb']:.0f} MiB "
          f"({keep['modules_resident_at_end']} resident at the end; {keep['seconds']:.1f} s)")
    for res in one["residency"]:
        print(f"     {res['stage']:9s} rss before {res['rss_before_mb']:.0f} -> peak {res['peak_rss_mb']:.0f} "
              f"-> after close {res['rss_after_close_mb']:.0f} MiB (estimate {res['estimated_mb']:.0f} MiB)")


def _print_switch(s: dict) -> None:
    print("2. Module switch time")
    print(f"   close + reload merged module:      {s['reload_merged_module']['mean_ms']:.1f} ms mean "
          f"(min {s['reload_merged_module']['min_ms']:.1f})")
    print(f"   close + reload base + LoRA adapter: {s['reload_base_plus_adapter']['mean_ms']:.1f} ms mean "
          f"(min {s['reload_base_plus_adapter']['min_ms']:.1f})")
    print(f"   swap adapter, first time (reads {s['adapter_file_mb']} MiB file): "
          f"{s['swap_adapter_first_time']['mean_ms']:.2f} ms mean")
    print(f"   swap adapter, already initialized: {1000 * s['swap_adapter_initialized']['mean_ms']:.0f} µs mean "
          f"(whole pool.use() around it: {1000 * s['swap_use_wall_initialized']['mean_ms']:.0f} µs)")


def _print_batching(b: dict) -> None:
    print(f"3. TMD over {b['questions']} StrategyQA test questions ({b['source']}), batches of "
          f"{b['batch_size']}, modes interleaved batch by batch")
    for mode in MODES:
        m = b[mode]
        print(f"   {mode:13s}: {m['seconds']:.1f} s ({m['seconds_per_question']:.2f} s/question), "
              f"{m['loads']} loads taking {m['load_seconds']:.1f} s, generation {m['generation_seconds']:.1f} s, "
              f"{m['correct']} correct")
    print(f"   identical outputs: {b['identical_outputs']}")


if __name__ == "__main__":
    main()
