"""Module residency and switch time.

    .venv/bin/python scripts/bench/residency.py [--switch-rounds 5] [--skip residency|switch] [--json out.json]

a) Peak RSS of one TMD question with one module resident at a time vs all three kept loaded (three
   distinct GGUF files: copies of the embedded model, so three modules really take memory), each in
   a fresh subprocess so its peak RSS is its own; also re-measures the fixed overhead behind
   tmd_local.core.memory's estimate (printed beside each stage's peak).
b) Module switch time: close + reload (a merged module, and base + LoRA adapter) vs swapping a LoRA
   adapter on the resident base (llama_set_adapters_lora). The adapters are small synthetic LoRAs
   for the embedded model (tmd_local/core/lora_gguf.py) until `tmd export` produces real ones.
Load average is printed with the figures: on shared cores, wall times say as much about the
neighbours as about tmd.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside it, also when a test loads this file
from common import (  # noqa: E402
    EMBEDDED, child_command, finish, new_parser, parse, print_child, ratio, run_child, settings_from,
    start_figures)
from tmd_local.core.memory import peak_rss_mb, rss_mb  # noqa: E402
from tmd_local.runtime.pipeline import ModuleSet, run  # noqa: E402
from tmd_local.core.registry import ModelRef, resolve_model  # noqa: E402
from tmd_local.core.roles import TMD_ROLES  # noqa: E402
from tmd_local.runtime.generation import ModuleRef  # noqa: E402
from tmd_local.runtime.pool import ModulePool  # noqa: E402


QUESTION_ID = "demo-plants"  # greedy decoding decomposes it, so all three modules run


# --- 2a. residency -----------------------------------------------------------------------------

def part_residency(args) -> dict:
    """(subprocess) One TMD question over three module files; peak RSS of this whole process."""
    from tmd_local.core.demo import DEMO_QUESTIONS

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
    model = resolve_model(EMBEDDED)
    files = []
    for role in TMD_ROLES:
        shutil.copyfile(model.path, tmp / f"{role}.gguf")
        files.append(str(tmp / f"{role}.gguf"))
    out = {}
    for keep in (False, True):
        out["keep_loaded" if keep else "one_at_a_time"] = run_child(
            "part residency", child_command(__file__, args, *(["--keep-loaded"] if keep else []), "--files", *files))
    return out


# --- 2b. switch time ---------------------------------------------------------------------------

def switch_times(args, tmp: Path) -> dict:
    from tmd_local.core.lora_gguf import write_lora

    model = resolve_model(EMBEDDED)
    settings = settings_from(args)
    adapters = [write_lora(model.path, tmp / f"{n}.lora.gguf", scale=0.05, seed=i)
                for i, n in enumerate(TMD_ROLES)]
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


# --- printing ---------------------------------------------------------------------------------

def _print_residency(r: dict) -> None:
    one, keep = r["one_at_a_time"], r["keep_loaded"]
    print("2a. Peak RSS, one TMD question, three module files (copies of the embedded Q4_1 model)")
    print(f"   one module at a time: {one['process_peak_rss_mb']:.0f} MiB "
          f"(stages: {', '.join(one['stages'])}; {one['seconds']:.1f} s)")
    print(f"   all three kept loaded: {keep['process_peak_rss_mb']:.0f} MiB "
          f"({keep['modules_resident_at_end']} resident at the end; {keep['seconds']:.1f} s)")
    for res in one["residency"]:
        print(f"     {res['stage']:9s} rss before {res['rss_before_mb']:.0f} -> peak {res['peak_rss_mb']:.0f} "
              f"-> after close {res['rss_after_close_mb']:.0f} MiB (estimate {res['estimated_mb']:.0f} MiB)")


def _print_switch(s: dict) -> None:
    print("2b. Module switch time")
    print(f"   close + reload merged module:      {s['reload_merged_module']['mean_ms']:.1f} ms mean "
          f"(min {s['reload_merged_module']['min_ms']:.1f})")
    print(f"   close + reload base + LoRA adapter: {s['reload_base_plus_adapter']['mean_ms']:.1f} ms mean "
          f"(min {s['reload_base_plus_adapter']['min_ms']:.1f})")
    print(f"   swap adapter, first time (reads {s['adapter_file_mb']} MiB file): "
          f"{s['swap_adapter_first_time']['mean_ms']:.2f} ms mean")
    print(f"   swap adapter, already initialized: {1000 * s['swap_adapter_initialized']['mean_ms']:.0f} µs mean "
          f"(whole pool.use() around it: {1000 * s['swap_use_wall_initialized']['mean_ms']:.0f} µs)")


def _rows_residency(r: dict) -> list[tuple[str, ...]]:
    one, keep = r["one_at_a_time"]["process_peak_rss_mb"], r["keep_loaded"]["process_peak_rss_mb"]
    return [("2", "peak RSS, one question", f"one module at a time {one:.0f} MiB",
             f"all three kept {keep:.0f} MiB", ratio(one, keep), "")]


def _rows_switch(s: dict) -> list[tuple[str, ...]]:
    swap, reload = s["swap_adapter_initialized"]["mean_ms"], s["reload_base_plus_adapter"]["mean_ms"]
    return [("2", "module switch", f"adapter swap {1000 * swap:.0f} µs", f"reload base + adapter {reload:.1f} ms",
             ratio(swap, reload), "")]


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--skip", nargs="*", default=[], choices=["residency", "switch"],
                        help="leave out one of the two measurements")
    parser.add_argument("--switch-rounds", type=int, default=5, help="switches per adapter (>= 2)")
    parser.add_argument("--keep-loaded", action="store_true", help=argparse.SUPPRESS)  # a child's side
    parser.add_argument("--files", nargs="*", help=argparse.SUPPRESS)  # a child's module files
    args = parse(parser)
    if args.switch_rounds < 2:  # the first round swaps uninitialized adapters; the later ones are the figure
        parser.error("--switch-rounds: at least 2")
    return args


def main() -> None:
    args = parse_args()
    if args.child:  # one residency measurement, its figures as the last line
        print_child(part_residency(args))
        return
    figures = start_figures(args)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tmd-bench-") as tmp:
        if "residency" not in args.skip:
            figures["residency"] = residency(args, Path(tmp))
            _print_residency(figures["residency"])
            rows += _rows_residency(figures["residency"])
        if "switch" not in args.skip:
            figures["switch"] = switch_times(args, Path(tmp))
            _print_switch(figures["switch"])
            rows += _rows_switch(figures["switch"])
    finish(figures, args, rows)


if __name__ == "__main__":
    main()
