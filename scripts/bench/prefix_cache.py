"""Prefix cache: seconds per question of TMD and DRD over StrategyQA test questions, stage-batched,
with each resident module's KV cache kept between prompts (tmd's default) vs every prompt
evaluated from scratch; also checks both give the same generations and scored answers.

    .venv/bin/python scripts/bench/prefix_cache.py [--prefix-questions 20] [--threads N] [--json out.json]

Load average is printed with the figures: on shared cores, wall times say as much about the
neighbours as about tmd.
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


# --- 5. prefix cache: a resident module evaluates the shared start of its prompts once ---------

def prefix_cache(args) -> dict:
    """TMD and DRD over the same questions, stage-batched (each module resident for all of them),
    with and without the KV cache kept between prompts; alternating which goes first."""
    from tmd_local.core.datasets import load_questions

    questions, report = load_questions("strategyqa", "test", limit=args.prefix_questions, hub=False)
    modules = ModuleSet.single(resolve_model(EMBEDDED))
    out = {"questions": len(questions), "source": report.source}
    for system in ("drd", "tmd"):
        sides = {}
        for cache in ((True, False) if system == "drd" else (False, True)):
            settings = settings_from(args)
            settings.prefix_cache = cache
            started = time.perf_counter()
            traces = run(system, questions, modules, settings, pool=ModulePool(settings))
            seconds = time.perf_counter() - started
            sides["cached" if cache else "from_scratch"] = {
                "seconds_per_question": round(seconds / len(questions), 3),
                "outputs": [(t.raw, t.stated_answer) for t in traces],
                "answers": [t.answer for t in traces]}
            print(f"   {system} prefix cache {'on' if cache else 'off'}: {seconds:.1f} s", file=sys.stderr, flush=True)
        on, off = sides["cached"], sides["from_scratch"]
        out[system] = {"cached": on["seconds_per_question"], "from_scratch": off["seconds_per_question"],
                       "speedup": round(off["seconds_per_question"] / on["seconds_per_question"], 3),
                       "identical_generations": on["outputs"] == off["outputs"],
                       "same_scored_answers": on["answers"] == off["answers"]}
    return out


# --- printing ---------------------------------------------------------------------------------

def _print_prefix(p: dict) -> None:
    print(f"5. Prefix cache: {p['questions']} StrategyQA test questions ({p['source']}), stage-batched")
    for system in ("tmd", "drd"):
        m = p[system]
        print(f"   {system.upper()}: {m['cached']:.2f} s/question with the cache, {m['from_scratch']:.2f} from "
              f"scratch ({m['speedup']:.2f}x); identical generations: {m['identical_generations']}, "
              f"same scored answers: {m['same_scored_answers']}")


def _rows_prefix(p: dict) -> list[tuple[str, ...]]:
    return [("5", f"{s.upper()} s/question", f"prefix cache {p[s]['cached']:.2f}",
             f"from scratch {p[s]['from_scratch']:.2f}", ratio(p[s]["cached"], p[s]["from_scratch"]),
             f"identical generations {yes(p[s]['identical_generations'])}") for s in ("tmd", "drd")]


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--prefix-questions", type=int, default=20, help="StrategyQA test questions")
    return parse(parser)


def main() -> None:
    args = parse_args()
    figures = start_figures(args)
    figures["prefix"] = prefix_cache(args)
    _print_prefix(figures["prefix"])
    finish(figures, args, _rows_prefix(figures["prefix"]))


if __name__ == "__main__":
    main()
