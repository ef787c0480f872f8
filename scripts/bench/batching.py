"""Stage-batched (one load per stage per batch of questions) vs per-question (one load per stage
per question) TMD over StrategyQA test questions.

    .venv/bin/python scripts/bench/batching.py [--questions 50] [--batch-size 10] [--threads N] [--json out.json]

The two modes are interleaved batch by batch so that a change in the machine's load hits both
alike; also checks both give the same outputs. Load average is printed with the figures: on shared
cores, wall times say as much about the neighbours as about tmd.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside it, also when a test loads this file
from common import EMBEDDED, finish, new_parser, parse, ratio, settings_from, start_figures, yes  # noqa: E402
from tmd_local.runtime.pipeline import ModuleSet, run  # noqa: E402
from tmd_local.core.registry import resolve_model  # noqa: E402
from tmd_local.runtime.pool import ModulePool  # noqa: E402


MODES = ("stage_batched", "per_question")


def batching(args) -> dict:
    """Stage-batched vs per-question over the same questions, interleaved chunk by chunk (batch =
    chunk) with alternating order, so a change in the machine's load hits both modes alike."""
    from tmd_local.core.datasets import load_questions

    questions, report = load_questions("strategyqa", "test", limit=args.questions, hub=False)
    modules = ModuleSet.single(resolve_model(EMBEDDED))
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


# --- printing ---------------------------------------------------------------------------------

def _print_batching(b: dict) -> None:
    print(f"3. TMD over {b['questions']} StrategyQA test questions ({b['source']}), batches of "
          f"{b['batch_size']}, modes interleaved batch by batch")
    for mode in MODES:
        m = b[mode]
        print(f"   {mode:13s}: {m['seconds']:.1f} s ({m['seconds_per_question']:.2f} s/question), "
              f"{m['loads']} loads taking {m['load_seconds']:.1f} s, generation {m['generation_seconds']:.1f} s, "
              f"{m['correct']} correct")
    print(f"   identical outputs: {b['identical_outputs']}")


def _rows_batching(b: dict) -> list[tuple[str, ...]]:
    batched, single = b["stage_batched"]["seconds"], b["per_question"]["seconds"]
    return [("3", f"wall, {b['questions']} questions", f"stage-batched {batched:.1f} s",
             f"per-question {single:.1f} s", ratio(batched, single),
             f"identical outputs {yes(b['identical_outputs'])}")]


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--questions", type=int, default=50, help="StrategyQA test questions")
    parser.add_argument("--batch-size", type=int, default=10, help="questions per stage batch (0: all in one batch)")
    return parse(parser)


def main() -> None:
    args = parse_args()
    figures = start_figures(args)
    figures["batching"] = batching(args)
    _print_batching(figures["batching"])
    finish(figures, args, _rows_batching(figures["batching"]))


if __name__ == "__main__":
    main()
