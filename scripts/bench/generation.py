"""Generated tokens/s of the TMD pipeline vs raw llama-cpp-python on the same GGUF (the embedded
model) and the very same prompts.

    .venv/bin/python scripts/bench/generation.py [--gen-questions 5] [--gen-rounds 2] [--threads N] [--json out.json]

An unmeasured pipeline pass over StrategyQA test questions records every prompt the runner sends
(already tokenized, as the runner sends them; from the pipeline's generation_finished events) and
warms the page cache and llama.cpp for both sides; then measured rounds alternate which side goes
first. Both sides reset the KV cache before each prompt and decode greedily with the same settings,
so the generated tokens and texts should be identical; the generation time of a call includes its
prompt evaluation on both sides. Load average is printed with the figures: on shared cores, wall
times say as much about the neighbours as about tmd.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside it, also when a test loads this file
from common import EMBEDDED, finish, new_parser, parse, ratio, settings_from, start_figures, yes  # noqa: E402
from tmd_local.runtime.pipeline import Events, ModuleSet, run  # noqa: E402
from tmd_local.core.registry import ModelRef, resolve_model  # noqa: E402
from tmd_local.runtime.generation import Generation, GenerationSettings  # noqa: E402
from tmd_local.runtime.pool import ModulePool  # noqa: E402


@dataclass
class Call:
    """One generation the runner made: the prompt exactly as it went to llama.cpp, and its result."""
    stage: str
    tokens: list[int]
    max_tokens: int  # after the runner's clamp to the room left in the context
    text: str
    completion_tokens: int
    finish_reason: str


class _CallRecorder(Events):
    """Records each generation the runner made, with the prompt's token ids as it tokenized them
    (rendered with the GGUF's chat template, no extra BOS), so the raw side gets identical ids."""

    def __init__(self):
        self.calls: list[Call] = []

    def generation_finished(self, stage: str, index: int, call: int, generation: Generation) -> None:
        self.calls.append(Call(stage, generation.prompt_ids, generation.max_tokens, generation.text,
                               generation.completion_tokens, generation.finish_reason))


def _pipeline_pass(questions, modules: ModuleSet, settings: GenerationSettings) -> dict:
    """TMD as `tmd eval` runs it (one module resident at a time); figures from the traces."""
    pool = ModulePool(settings)
    started = time.perf_counter()
    traces = run("tmd", questions, modules, pool=pool)
    wall = time.perf_counter() - started
    records = [(name, s.prompt_tokens, s.completion_tokens, s.seconds, s.calls)
               for tr in traces for name, s in tr.stages.items()]
    return _side(records, wall, len(pool.history), sum(r.load_seconds for r in pool.history))


def _raw_pass(model: ModelRef, settings: GenerationSettings, calls: list[Call]) -> dict:
    """The same prompts straight through llama_cpp.Llama, built with the runner's arguments."""
    from llama_cpp import Llama

    started = time.perf_counter()
    llm = Llama(model_path=str(model.path), n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                n_threads_batch=settings.n_threads, n_batch=settings.n_batch, seed=settings.seed, verbose=False)
    load_seconds = time.perf_counter() - started
    records, texts = [], []
    for call in calls:
        llm.reset()  # as the runner: each prompt stands alone, no KV reuse between prompts
        t0 = time.perf_counter()
        out = llm.create_completion(call.tokens, max_tokens=call.max_tokens,
                                    temperature=settings.temperature,
                                    repeat_penalty=settings.repeat_penalty, seed=settings.seed)
        usage = out["usage"]
        records.append((call.stage, usage["prompt_tokens"], usage["completion_tokens"],
                        time.perf_counter() - t0, 1))
        texts.append(out["choices"][0]["text"].strip())
    llm.close()
    side = _side(records, time.perf_counter() - started, 1, load_seconds)
    side["texts"] = texts
    return side


def _side(records, wall: float, loads: int, load_seconds: float) -> dict:
    """Sum (stage, prompt tokens, completion tokens, generation seconds, calls) records per stage."""
    per_stage = {}
    for stage, prompt_tokens, tokens, seconds, calls in records:
        agg = per_stage.setdefault(stage, {"prompt_tokens": 0, "tokens": 0, "seconds": 0.0, "calls": 0})
        agg["prompt_tokens"] += prompt_tokens
        agg["tokens"] += tokens
        agg["seconds"] += seconds
        agg["calls"] += calls
    return {"tokens": sum(a["tokens"] for a in per_stage.values()),
            "prompt_tokens": sum(a["prompt_tokens"] for a in per_stage.values()),
            "generation_seconds": sum(a["seconds"] for a in per_stage.values()),
            "wall_seconds": wall, "loads": loads, "load_seconds": load_seconds, "per_stage": per_stage}


def generation(args) -> dict:
    from tmd_local.core.datasets import load_questions

    questions, report = load_questions("strategyqa", "test", limit=args.gen_questions, hub=False)
    model = resolve_model(EMBEDDED)
    modules, settings = ModuleSet.single(model), settings_from(args)
    settings.prefix_cache = False  # the raw side resets before each prompt too (part 5 measures the cache)
    recorder = _CallRecorder()
    run("tmd", questions, modules, settings, recorder)  # unmeasured: collects the prompts, warms both sides
    calls = recorder.calls
    rounds = {"pipeline": [], "raw": []}
    for r in range(args.gen_rounds):
        for side in (("pipeline", "raw") if r % 2 == 0 else ("raw", "pipeline")):
            started = time.perf_counter()
            rounds[side].append(_pipeline_pass(questions, modules, settings) if side == "pipeline"
                                else _raw_pass(model, settings, calls))
            print(f"   round {r + 1}/{args.gen_rounds} {side}: {time.perf_counter() - started:.1f} s",
                  file=sys.stderr, flush=True)
    return _generation_figures(questions, report.source, calls, rounds)


def _generation_figures(questions, source: str, calls: list[Call], rounds: dict) -> dict:
    out = {"questions": len(questions), "source": source, "calls": len(calls), "rounds": len(rounds["raw"]),
           "pipeline": _side_figures(rounds["pipeline"]), "raw": _side_figures(rounds["raw"])}
    pipe, raw = out["pipeline"], out["raw"]
    out["ratio_pipeline_to_raw"] = round(pipe["tokens_per_second"] / raw["tokens_per_second"], 3)
    out["identical_texts"] = all(p["texts"] == [c.text for c in calls] for p in rounds["raw"])
    out["same_prompt_tokens"] = pipe["prompt_tokens_per_round"] == raw["prompt_tokens_per_round"]
    out["token_counts_match"] = pipe["tokens_per_round"] == raw["tokens_per_round"]
    # The runner counts llama.cpp's n_tokens minus the prompt, which lacks the last sampled token
    # when a call stops at max_tokens (that token is never evaluated): one fewer per such call.
    out["calls_cut_at_max_tokens"] = sum(c.finish_reason == "length" for c in calls)
    out["token_count_difference"] = raw["tokens_per_round"] - pipe["tokens_per_round"]
    return out


def _side_figures(passes: list[dict]) -> dict:
    """One side's rounds: tok/s over all of them (tokens / generation seconds), wall per round."""
    seconds = sum(p["generation_seconds"] for p in passes)
    first = passes[0]  # greedy: every round generates the same tokens
    return {"tokens_per_round": first["tokens"], "prompt_tokens_per_round": first["prompt_tokens"],
            "generation_seconds": round(seconds, 3),
            "tokens_per_second": round(sum(p["tokens"] for p in passes) / seconds, 2),
            "tokens_per_second_by_round": [round(p["tokens"] / p["generation_seconds"], 2) for p in passes],
            "wall_seconds_per_round": round(statistics.mean(p["wall_seconds"] for p in passes), 3),
            "loads_per_round": first["loads"],
            "load_seconds_per_round": round(statistics.mean(p["load_seconds"] for p in passes), 3),
            "per_stage": {s: {"tokens": a["tokens"], "prompt_tokens": a["prompt_tokens"], "calls": a["calls"],
                              "tokens_per_second": round(a["tokens"] / a["seconds"], 2)}
                          for s, a in first["per_stage"].items()}}


# --- printing ---------------------------------------------------------------------------------

def _print_generation(g: dict) -> None:
    print(f"1. Generated tokens/s, TMD pipeline vs raw llama-cpp-python, same GGUF and prompts: "
          f"{g['questions']} StrategyQA test questions ({g['source']}), {g['calls']} generations, "
          f"{g['rounds']} rounds per side, alternating which goes first")
    for side in ("pipeline", "raw"):
        m = g[side]
        stages = ", ".join(f"{s} {a['tokens_per_second']:.1f}" for s, a in m["per_stage"].items())
        print(f"   {side:8s}: {m['tokens_per_second']:.1f} tok/s ({m['tokens_per_round']} generated, "
              f"{m['prompt_tokens_per_round']} prompt tokens per round; {stages}); wall incl. load "
              f"{m['wall_seconds_per_round']:.1f} s per round ({_loads(m)})")
    print(f"   pipeline / raw: {g['ratio_pipeline_to_raw']:.3f}; identical texts: {g['identical_texts']}; "
          f"same prompt tokens: {g['same_prompt_tokens']}; generated token counts match: "
          f"{g['token_counts_match']}" + _count_note(g))


def _loads(side: dict) -> str:
    n = side["loads_per_round"]
    return f"{n} load{'s' if n != 1 else ''}, {side['load_seconds_per_round']:.2f} s"


def _count_note(g: dict) -> str:
    diff, cut = g["token_count_difference"], g["calls_cut_at_max_tokens"]
    if diff == 0:
        return ""
    why = f" = the calls cut at max_tokens ({cut}), where the runner counts one fewer" if diff == cut else ""
    return f" (raw counts {diff} more{why})"


def _rows_generation(g: dict) -> list[tuple[str, ...]]:
    pipe, raw = g["pipeline"], g["raw"]
    counts = f"token counts {yes(g['token_counts_match'])}" + (
        f" (raw +{g['token_count_difference']})" if g["token_count_difference"] else "")
    return [("1", "generated tok/s", f"pipeline {pipe['tokens_per_second']:.1f}",
             f"raw llama-cpp-python {raw['tokens_per_second']:.1f}", f"{g['ratio_pipeline_to_raw']:.3f}",
             f"same prompts {yes(g['same_prompt_tokens'])}, texts {yes(g['identical_texts'])}, {counts}"),
            ("1", "wall per round incl. load", f"{pipe['wall_seconds_per_round']:.1f} s ({_loads(pipe)})",
             f"{raw['wall_seconds_per_round']:.1f} s ({_loads(raw)})",
             ratio(pipe["wall_seconds_per_round"], raw["wall_seconds_per_round"]), "")]


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--gen-questions", type=int, default=5, help="StrategyQA test questions")
    parser.add_argument("--gen-rounds", type=int, default=2,
                        help="measured rounds per side (the side going first alternates)")
    return parse(parser)


def main() -> None:
    args = parse_args()
    figures = start_figures(args)
    figures["generation"] = generation(args)
    _print_generation(figures["generation"])
    finish(figures, args, _rows_generation(figures["generation"]))


if __name__ == "__main__":
    main()
