"""Runtime figures for the README: generation tok/s, residency, switch time, batching, training tok/s.

    .venv/bin/python scripts/bench_runtime.py [--parts 1,2,3,4] [--questions 50] [--threads N] [--json out.json]

1. Generated tokens/s of the TMD pipeline vs raw llama-cpp-python on the same GGUF (the embedded model)
   and the very same prompts: an unmeasured pipeline pass over StrategyQA test questions records every
   prompt the runner sends (already tokenized, as the runner sends them; from the pipeline's
   generation_finished events) and warms the page cache and llama.cpp for both sides; then measured rounds alternate which side goes first. Both sides reset the
   KV cache before each prompt and decode greedily with the same settings, so the generated tokens and
   texts should be identical; the generation time of a call includes its prompt evaluation on both sides.
2. a) Peak RSS of one TMD question with one module resident at a time vs all three kept loaded
   (three distinct GGUF files: copies of the embedded model, so three modules really take memory).
   b) Module switch time: close + reload (a merged module, and base + LoRA adapter) vs swapping a
   LoRA adapter on the resident base (llama_set_adapters_lora). The adapters are small synthetic
   LoRAs for the embedded model (tmd_local/lora_gguf.py) until `tmd export` produces real ones.
3. Stage-batched (one load per stage per batch of questions) vs per-question (one load per stage
   per question) over StrategyQA test questions, interleaved batch by batch so that a change in
   the machine's load hits both alike; also checks both give the same outputs.
4. Training tokens/s (real tokens, padding excluded) and padded-token ratio: a few LoRA optimizer
   steps of one module on the embedded model (its dequantized HF copy in models/base/), with dynamic
   padding vs padding every batch to --train-max-length (512, as the paper did), on gold-teacher data
   for StrategyQA train questions written to a temporary folder (`tmd teach --teacher gold`); and
   the LM head applied only at positions that predict a target token (logits_to_keep, the trainer's
   way) vs at every position, with dynamic padding both times: the same loss, less work; and two
   one-thread trainings at once (how scripts/distill_strategyqa.sh trains) vs one using every core.
5. Prefix cache: seconds per question of TMD and DRD, stage-batched, with each resident module's
   KV cache kept between prompts (tmd's default) vs every prompt evaluated from scratch.
6. Thread settings under load: 3 processes at once answering the same prompts with one generation
   thread, with OpenMP's default waiting and llama-cpp-python's default prompt threads (one per
   core) vs tmd's settings (OMP_WAIT_POLICY=PASSIVE, prompt threads = generation threads).
7. Generated tok/s of the same weights in f16, q8_0, q4_1 and q4_0.
Residency and training measurements each run in a fresh subprocess so their peak RSS is their own.
Load average is printed with the figures: on shared cores, wall times say as much about the
neighbours as about tmd.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tmd_local.generation import Generation, GenerationSettings, ModuleRef  # noqa: E402
from tmd_local.memory import peak_rss_mb, rss_mb  # noqa: E402
from tmd_local.pipeline import Events, ModuleSet, run  # noqa: E402
from tmd_local.pool import ModulePool  # noqa: E402
from tmd_local.registry import ModelRef, resolve_model  # noqa: E402
from tmd_local.roles import ROLES, TMD_ROLES  # noqa: E402
from tmd_local.runner import LoadedModule  # noqa: E402

QUESTION_ID = "demo-plants"  # greedy decoding decomposes it, so all three modules run
EMBEDDED = "smollm2-135m-instruct"


def settings_from(args) -> GenerationSettings:
    settings = GenerationSettings(n_ctx=args.n_ctx)
    if args.threads:
        settings.n_threads = args.threads
    settings.max_tokens = {"analyzer": args.analyzer_tokens, "informant": args.informant_tokens,
                           "reasoner": args.reasoner_tokens, "drd": args.reasoner_tokens}
    return settings


# --- 1. generation speed: TMD pipeline vs raw llama-cpp-python ------------------------------

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
    from tmd_local.datasets import load_questions

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


# --- 2a. residency -----------------------------------------------------------------------------

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
    model = resolve_model(EMBEDDED)
    files = []
    for role in TMD_ROLES:
        shutil.copyfile(model.path, tmp / f"{role}.gguf")
        files.append(str(tmp / f"{role}.gguf"))
    out = {}
    for keep in (False, True):
        out["keep_loaded" if keep else "one_at_a_time"] = _subprocess(
            args, "residency", *(["--keep-loaded"] if keep else []), "--files", *files)
    return out


# --- 2b. switch time ---------------------------------------------------------------------------

def switch_times(args, tmp: Path) -> dict:
    from tmd_local.lora_gguf import write_lora

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


# --- 3. stage batching ------------------------------------------------------------------------

def batching(args) -> dict:
    """Stage-batched vs per-question over the same questions, interleaved chunk by chunk (batch =
    chunk) with alternating order, so a change in the machine's load hits both modes alike."""
    from tmd_local.datasets import load_questions

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


MODES = ("stage_batched", "per_question")


# --- 4. training speed: dynamic padding vs pad-to-max, LM head on targets vs everywhere ---------

TRAIN_MODES = ("dynamic", "pad_to_max", "full_head")
TRAIN_KEYS = ("steps", "tokens_trained", "token_slots", "padded_token_ratio", "tokens_per_second",
              "train_seconds", "wall_seconds", "peak_rss_mb", "threads", "device", "precision")


def part_training(args) -> dict:
    """(subprocess) A few LoRA steps of one module through the trainer's Python API."""
    from tmd_local.memory import reset_peak_rss
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
    teacher = tmp / "teacher"
    # Gold teacher: instant and offline, so a fresh checkout gets the same data as this machine.
    _run_quiet([sys.executable, "-m", "tmd_local", "teach", "--dataset", "strategyqa", "--split", "train",
                "--limit", str(args.train_questions), "--teacher", "gold", "--out", str(teacher)])
    _ensure_base()  # a fresh machine dequantizes the GGUF once here, not inside the first timed run
    out = {"module": args.train_module, "questions": args.train_questions, "max_length": args.train_max_length}
    # full_head: dynamic padding, but the LM head over every position (what logits_to_keep saves)
    for mode in TRAIN_MODES:
        started = time.perf_counter()
        out[mode] = _subprocess(args, "training", *_training_child_args(args, teacher, tmp / f"adapter-{mode}"),
                                *(["--pad-to-max"] if mode == "pad_to_max" else []),
                                *(["--full-head"] if mode == "full_head" else []))
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
        _part_command(args, "training", *_training_child_args(args, teacher, tmp / f"adapter-job{k}"), threads=1),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(jobs)]
    outputs = [c.communicate() for c in children]  # waits: returncode is set only after this
    each = [_child_figures("training", c.returncode, *out) for c, out in zip(children, outputs)]
    tokens = sum(e["tokens_trained"] for e in each)
    seconds = max(e["train_seconds"] for e in each)
    print(f"   {jobs} jobs x 1 thread: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return {"jobs": jobs, "threads_each": 1, "tokens_per_second": round(tokens / seconds, 1),
            "each_tokens_per_second": [e["tokens_per_second"] for e in each],
            "peak_rss_mb_each": [e["process_peak_rss_mb"] for e in each]}


def _ensure_base() -> None:
    _run_quiet([sys.executable, "-c", f"from tmd_local.hf_base import ensure_hf_base; ensure_hf_base({EMBEDDED!r})"])


def _run_quiet(cmd: list[str]) -> None:
    """A preparation step: its output only matters when it fails, and then all of it does."""
    done = subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[1:4])} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")


# --- 5. prefix cache: a resident module evaluates the shared start of its prompts once ---------

def prefix_cache(args) -> dict:
    """TMD and DRD over the same questions, stage-batched (each module resident for all of them),
    with and without the KV cache kept between prompts; alternating which goes first."""
    from tmd_local.datasets import load_questions

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


# --- 6. thread settings: 3 evaluations sharing the cores ----------------------------------------

THREAD_CHILD = r"""
import json, sys, time
from llama_cpp import Llama
model, prompts_file, threads_batch, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
wall, cpu = time.perf_counter(), time.process_time()
llm = Llama(model_path=model, n_ctx=2048, n_threads=1, n_threads_batch=threads_batch, verbose=False)
texts = []
for tokens in json.load(open(prompts_file)):
    llm.reset()
    texts.append(llm.create_completion(tokens, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.1)["choices"][0]["text"])
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "texts": texts}))
"""


def thread_settings(args, tmp: Path) -> dict:
    """3 processes at once, each answering the same DRD prompts with one generation thread: the old
    settings (OpenMP's default spinning wait, one prompt thread per core) vs tmd's (sleeping wait,
    prompt threads = generation threads). Raw llama-cpp-python children, so that nothing tmd
    imports sets the wait policy for the old side."""
    from tmd_local import prompts
    from tmd_local.datasets import load_questions

    questions, _ = load_questions("strategyqa", "test", limit=args.thread_questions, hub=False)
    model = resolve_model(EMBEDDED)
    module = LoadedModule(model, settings_from(args))
    try:
        tokens = [module.tokenize(module.render(prompts.drd_messages(q))) for q in questions]
    finally:
        module.close()
    prompts_file = tmp / "thread-prompts.json"
    prompts_file.write_text(json.dumps(tokens))
    out = {"processes": 3, "questions": len(questions), "max_tokens": args.thread_tokens}
    for label, wait, batch_threads in (("old", None, os.cpu_count() or 1), ("tmd", "PASSIVE", 1)):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if wait:
            env["OMP_WAIT_POLICY"] = wait
        cmd = [sys.executable, "-c", THREAD_CHILD, str(model.path), str(prompts_file), str(batch_threads),
               str(args.thread_tokens)]
        started = time.perf_counter()
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for _ in range(3)]
        results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        out[label] = {"wall_each": [round(r["wall"], 2) for r in results],
                      "cpu_each": [round(r["cpu"], 2) for r in results],
                      "wall_all": round(time.perf_counter() - started, 2),
                      "omp_wait_policy": wait or "(unset: OpenMP default)", "n_threads_batch": batch_threads,
                      "texts": results[0]["texts"]}
        print(f"   {label}: {out[label]['wall_all']:.1f} s for all three", file=sys.stderr, flush=True)
    out["identical_texts"] = out["old"].pop("texts") == out["tmd"].pop("texts")
    return out


# --- 7. generation speed per quantization of the same model -----------------------------------

BENCH_QUANTS = ("f16", "q8_0", "q4_1", "q4_0")


def quant_speed(args, tmp: Path) -> dict:
    """The embedded model's weights (dequantized once into models/base) converted to f16 with
    llama.cpp's converter and quantized from that f16 to each type; DRD answers to the same
    questions, prompt and generation timed apart."""
    from exporter.quant import quantize
    from exporter.vendor import ensure_converter
    from tmd_local.datasets import load_questions
    from tmd_local.hf_base import ensure_hf_base

    base_dir = ensure_hf_base(EMBEDDED)
    files = {"f16": tmp / "bench.f16.gguf"}
    converter = ensure_converter()
    converter.run(converter.hf_script, [str(base_dir.resolve()), "--outtype", "f16", "--outfile", str(files["f16"])],
                  tmp / "convert.log")
    for quant in BENCH_QUANTS[1:]:
        files[quant] = tmp / f"bench.{quant}.gguf"
        quantize(files["f16"], files[quant], quant, args.threads, tmp / f"{quant}.log")
    questions, _ = load_questions("strategyqa", "test", limit=args.quant_questions, hub=False)
    out = {"questions": len(questions), "max_tokens": args.quant_tokens, "rounds": args.quant_rounds}
    totals = {quant: [0.0, 0.0, 0, 0] for quant in files}  # prompt s, generation s, tokens, prompt tokens
    for r in range(args.quant_rounds):  # rounds in alternating order: a change of load hits all alike
        for quant in (list(files) if r % 2 == 0 else list(files)[::-1]):
            _time_quant(files[quant], quant, questions, args, totals[quant])
    for quant, (prompt_s, gen_s, tokens, prompt_tokens) in totals.items():
        out[quant] = {"file_mb": round(files[quant].stat().st_size / 2**20, 1),
                      "prompt_tokens_per_second": round(prompt_tokens / prompt_s, 1),
                      "generated_tokens_per_second": round(tokens / gen_s, 1) if gen_s > 0 else 0.0}
        print(f"   {quant}: {out[quant]['generated_tokens_per_second']:.1f} tok/s", file=sys.stderr, flush=True)
    return out


def _time_quant(path: Path, quant: str, questions, args, total: list) -> None:
    """DRD answers from one quantized file: time to the first token (the prompt) apart from the rest."""
    from tmd_local import prompts

    module = LoadedModule(ModelRef(path, f"bench {quant}"), settings_from(args))
    try:
        for q in questions:
            first = []
            module.reset()
            started = time.perf_counter()
            gen = module.generate(prompts.drd_messages(q), args.quant_tokens,
                                  on_text=lambda _: first or first.append(time.perf_counter()))
            prompt_seconds = (first[0] if first else time.perf_counter()) - started
            total[0] += prompt_seconds
            total[1] += gen.seconds - prompt_seconds
            total[2] += max(0, gen.completion_tokens - 1)
            total[3] += gen.prompt_tokens
    finally:
        module.close()


# --- driver -----------------------------------------------------------------------------------

PARTS = {"1": ("generation",), "2": ("residency", "switch"), "3": ("batching",), "4": ("training",),
         "5": ("prefix",), "6": ("threads",), "7": ("quants",)}


def _part_command(args, part: str, *extra: str, threads: int | None = None) -> list[str]:
    return [sys.executable, __file__, "--part", part, "--threads", str(threads or args.threads or 0),
            "--n-ctx", str(args.n_ctx), "--analyzer-tokens", str(args.analyzer_tokens),
            "--informant-tokens", str(args.informant_tokens),
            "--reasoner-tokens", str(args.reasoner_tokens), *extra]


def _subprocess(args, part: str, *extra: str) -> dict:
    done = subprocess.run(_part_command(args, part, *extra), check=False, capture_output=True, text=True)
    return _child_figures(part, done.returncode, done.stdout, done.stderr)


def _child_figures(part: str, returncode: int, stdout: str, stderr: str) -> dict:
    if returncode != 0:  # the child's own error, not just "exit status 1"
        sys.exit(f"bench part {part} failed:\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="1,2,3,4,5,6,7",
                        help="which figures to measure, comma-separated: 1 generation tok/s, 2 residency "
                             "+ switch time, 3 stage batching, 4 training tok/s, 5 prefix cache, 6 thread "
                             "settings under load, 7 tok/s per quantization (default: all)")
    parser.add_argument("--skip", nargs="*", default=[], choices=[n for names in PARTS.values() for n in names],
                        help="leave out single measurements by name")
    parser.add_argument("--threads", type=int, default=None,
                        help="llama.cpp and torch threads (default: all cores)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    gen = parser.add_argument_group("generation settings (parts 1-3)")
    gen.add_argument("--n-ctx", type=int, default=2048)
    gen.add_argument("--analyzer-tokens", type=int, default=128)
    gen.add_argument("--informant-tokens", type=int, default=128)
    gen.add_argument("--reasoner-tokens", type=int, default=320)
    part = parser.add_argument_group("part sizes")
    part.add_argument("--gen-questions", type=int, default=5, help="StrategyQA test questions for part 1")
    part.add_argument("--gen-rounds", type=int, default=2,
                      help="measured rounds per side in part 1 (the side going first alternates)")
    part.add_argument("--switch-rounds", type=int, default=5, help="switches per adapter in part 2 (>= 2)")
    part.add_argument("--questions", type=int, default=50, help="StrategyQA test questions for part 3")
    part.add_argument("--batch-size", type=int, default=10,
                      help="questions per stage batch in part 3 (0: all in one batch)")
    part.add_argument("--train-module", default="reasoner", choices=list(ROLES),
                      help="module trained in part 4")
    part.add_argument("--train-steps", type=int, default=3, help="optimizer steps per training run in part 4")
    part.add_argument("--train-questions", type=int, default=50,
                      help="StrategyQA train questions the gold teacher writes training data for (part 4)")
    part.add_argument("--train-max-length", type=int, default=512,
                      help="max tokens per example, and what pad-to-max pads to (part 4)")
    part.add_argument("--prefix-questions", type=int, default=20, help="StrategyQA test questions for part 5")
    part.add_argument("--thread-questions", type=int, default=3, help="questions per process in part 6")
    part.add_argument("--thread-tokens", type=int, default=64, help="tokens per answer in part 6")
    part.add_argument("--quant-questions", type=int, default=5, help="questions per quantization in part 7")
    part.add_argument("--quant-tokens", type=int, default=96, help="tokens per answer in part 7")
    part.add_argument("--quant-rounds", type=int, default=2, help="rounds over all quantizations in part 7")
    for hidden in ("--part", "--train-data", "--train-out"):  # how the parent calls its subprocesses
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--keep-loaded", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pad-to-max", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--full-head", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.threads = args.threads or None
    wanted = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not wanted <= PARTS.keys():
        parser.error(f"--parts {args.parts}: expected numbers from 1-7, e.g. 1,3")
    if args.switch_rounds < 2:  # the first round swaps uninitialized adapters; the later ones are the figure
        parser.error("--switch-rounds: at least 2")
    args.run = {name for p in wanted for name in PARTS[p]} - set(args.skip)
    return args


def main() -> None:
    args = parse_args()
    if args.part:  # a subprocess of this script: one measurement, its figures as the last line
        print(json.dumps({"residency": part_residency, "training": part_training}[args.part](args)))
        return

    settings = settings_from(args)
    figures = {"machine": {"cpus": os.cpu_count(), "threads": settings.n_threads,
                           "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
               "settings": {"n_ctx": settings.n_ctx, "max_tokens": settings.max_tokens}}
    steps = [("generation", lambda tmp: generation(args), _print_generation),
             ("residency", lambda tmp: residency(args, tmp), _print_residency),
             ("switch", lambda tmp: switch_times(args, tmp), _print_switch),
             ("batching", lambda tmp: batching(args), _print_batching),
             ("training", lambda tmp: training(args, tmp), _print_training),
             ("prefix", lambda tmp: prefix_cache(args), _print_prefix),
             ("threads", lambda tmp: thread_settings(args, tmp), _print_threads),
             ("quants", lambda tmp: quant_speed(args, tmp), _print_quants)]
    with tempfile.TemporaryDirectory(prefix="tmd-bench-") as tmp:
        for name, measure, show in steps:
            if name in args.run:
                figures[name] = measure(Path(tmp))
                show(figures[name])
    figures["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    _print_summary(figures)
    print(f"\nload average: start {figures['machine']['loadavg_start']}, end {figures['machine']['loadavg_end']} "
          f"on {os.cpu_count()} CPUs, {settings.n_threads} llama.cpp threads")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures: {args.json}")


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


def _print_batching(b: dict) -> None:
    print(f"3. TMD over {b['questions']} StrategyQA test questions ({b['source']}), batches of "
          f"{b['batch_size']}, modes interleaved batch by batch")
    for mode in MODES:
        m = b[mode]
        print(f"   {mode:13s}: {m['seconds']:.1f} s ({m['seconds_per_question']:.2f} s/question), "
              f"{m['loads']} loads taking {m['load_seconds']:.1f} s, generation {m['generation_seconds']:.1f} s, "
              f"{m['correct']} correct")
    print(f"   identical outputs: {b['identical_outputs']}")


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


def _print_summary(f: dict) -> None:
    """All measured figures side by side: the TMD way in one column, what it is compared with next."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tmd runtime figures")
    for col in ("#", "figure", "tmd", "compared with", "ratio", "check"):
        table.add_column(col)
    for row in _summary_rows(f):
        table.add_row(*row)
    print()
    Console(width=max(132, shutil.get_terminal_size().columns)).print(table)  # not 80 wide in a log


def _summary_rows(f: dict) -> list[tuple[str, ...]]:
    makers = {"generation": _rows_generation, "residency": _rows_residency, "switch": _rows_switch,
              "batching": _rows_batching, "training": _rows_training, "prefix": _rows_prefix,
              "threads": _rows_threads, "quants": _rows_quants}
    return [row for name, make in makers.items() if name in f for row in make(f[name])]


def _rows_generation(g: dict) -> list[tuple[str, ...]]:
    pipe, raw = g["pipeline"], g["raw"]
    counts = f"token counts {_yes(g['token_counts_match'])}" + (
        f" (raw +{g['token_count_difference']})" if g["token_count_difference"] else "")
    return [("1", "generated tok/s", f"pipeline {pipe['tokens_per_second']:.1f}",
             f"raw llama-cpp-python {raw['tokens_per_second']:.1f}", f"{g['ratio_pipeline_to_raw']:.3f}",
             f"same prompts {_yes(g['same_prompt_tokens'])}, texts {_yes(g['identical_texts'])}, {counts}"),
            ("1", "wall per round incl. load", f"{pipe['wall_seconds_per_round']:.1f} s ({_loads(pipe)})",
             f"{raw['wall_seconds_per_round']:.1f} s ({_loads(raw)})",
             _ratio(pipe["wall_seconds_per_round"], raw["wall_seconds_per_round"]), "")]


def _rows_residency(r: dict) -> list[tuple[str, ...]]:
    one, keep = r["one_at_a_time"]["process_peak_rss_mb"], r["keep_loaded"]["process_peak_rss_mb"]
    return [("2", "peak RSS, one question", f"one module at a time {one:.0f} MiB",
             f"all three kept {keep:.0f} MiB", _ratio(one, keep), "")]


def _rows_switch(s: dict) -> list[tuple[str, ...]]:
    swap, reload = s["swap_adapter_initialized"]["mean_ms"], s["reload_base_plus_adapter"]["mean_ms"]
    return [("2", "module switch", f"adapter swap {1000 * swap:.0f} µs", f"reload base + adapter {reload:.1f} ms",
             _ratio(swap, reload), "")]


def _rows_batching(b: dict) -> list[tuple[str, ...]]:
    batched, single = b["stage_batched"]["seconds"], b["per_question"]["seconds"]
    return [("3", f"wall, {b['questions']} questions", f"stage-batched {batched:.1f} s",
             f"per-question {single:.1f} s", _ratio(batched, single),
             f"identical outputs {_yes(b['identical_outputs'])}")]


def _rows_training(t: dict) -> list[tuple[str, ...]]:
    d, p = t["dynamic"], t["pad_to_max"]
    rss, wall = "process_peak_rss_mb", "process_wall_seconds"
    return [("4", "training tok/s (real tokens)", f"dynamic {d['tokens_per_second']:.0f}",
             f"pad to {t['max_length']} {p['tokens_per_second']:.0f}", f"{t['speedup_dynamic']:.2f}",
             f"same tokens trained {_yes(t['same_tokens_trained'])}"),
            ("4", "training tok/s, LM head", f"target positions {d['tokens_per_second']:.0f}",
             f"every position {t['full_head']['tokens_per_second']:.0f}", f"{t['speedup_head_on_targets']:.2f}",
             "same loss (tests/trainer)"),
            ("4", "training tok/s, all cores", f"{t['parallel']['jobs']} jobs x 1 thread "
             f"{t['parallel']['tokens_per_second']:.0f}", f"1 job x {d['threads']} threads {d['tokens_per_second']:.0f}",
             f"{t['parallel']['tokens_per_second'] / d['tokens_per_second']:.2f}", "scripts/distill_strategyqa.sh"),
            ("4", "padded-token ratio", f"{d['padded_token_ratio']:.1%}", f"{p['padded_token_ratio']:.1%}", "", ""),
            ("4", "training peak RSS", f"{d[rss]:.0f} MiB", f"{p[rss]:.0f} MiB", _ratio(d[rss], p[rss]), ""),
            ("4", "training process wall", f"{d[wall]:.1f} s", f"{p[wall]:.1f} s", _ratio(d[wall], p[wall]),
             f"{d['steps']} steps, load + train + save")]


def _print_prefix(p: dict) -> None:
    print(f"5. Prefix cache: {p['questions']} StrategyQA test questions ({p['source']}), stage-batched")
    for system in ("tmd", "drd"):
        m = p[system]
        print(f"   {system.upper()}: {m['cached']:.2f} s/question with the cache, {m['from_scratch']:.2f} from "
              f"scratch ({m['speedup']:.2f}x); identical generations: {m['identical_generations']}, "
              f"same scored answers: {m['same_scored_answers']}")


def _print_threads(t: dict) -> None:
    print(f"6. {t['processes']} concurrent evaluations ({t['questions']} DRD answers of {t['max_tokens']} tokens "
          "each, one generation thread)")
    for label in ("old", "tmd"):
        m = t[label]
        print(f"   {label:3s} (OMP_WAIT_POLICY {m['omp_wait_policy']}, n_threads_batch {m['n_threads_batch']}): "
              f"wall {m['wall_each']} s, CPU {m['cpu_each']} s, all three done in {m['wall_all']:.1f} s")
    print(f"   identical texts: {t['identical_texts']}")


def _print_quants(q: dict) -> None:
    print(f"7. Speed per quantization of the same weights ({q['questions']} DRD answers, {q['max_tokens']} tokens)")
    for quant in BENCH_QUANTS:
        m = q[quant]
        print(f"   {quant:5s}: {m['generated_tokens_per_second']:.1f} generated tok/s, prompt "
              f"{m['prompt_tokens_per_second']:.0f} tok/s, {m['file_mb']:.0f} MiB")


def _rows_prefix(p: dict) -> list[tuple[str, ...]]:
    return [("5", f"{s.upper()} s/question", f"prefix cache {p[s]['cached']:.2f}",
             f"from scratch {p[s]['from_scratch']:.2f}", _ratio(p[s]["cached"], p[s]["from_scratch"]),
             f"identical generations {_yes(p[s]['identical_generations'])}") for s in ("tmd", "drd")]


def _rows_threads(t: dict) -> list[tuple[str, ...]]:
    new, old = t["tmd"], t["old"]
    return [("6", "3 concurrent evals: wall", f"{max(new['wall_each']):.1f} s (max)", f"old {max(old['wall_each']):.1f} s",
             _ratio(max(new["wall_each"]), max(old["wall_each"])), f"identical texts {_yes(t['identical_texts'])}"),
            ("6", "3 concurrent evals: CPU", f"{sum(new['cpu_each']):.1f} s (sum)", f"old {sum(old['cpu_each']):.1f} s",
             _ratio(sum(new["cpu_each"]), sum(old["cpu_each"])), "")]


def _rows_quants(q: dict) -> list[tuple[str, ...]]:
    ref = q["q4_1"]["generated_tokens_per_second"]
    return [("7", f"{quant} generated tok/s", f"{q[quant]['generated_tokens_per_second']:.1f}",
             f"q4_1 {ref:.1f}", _ratio(q[quant]["generated_tokens_per_second"], ref),
             f"{q[quant]['file_mb']:.0f} MiB") for quant in BENCH_QUANTS]


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}" if b else "-"  # 3 significant digits: a swap/reload ratio is ~1e-5


if __name__ == "__main__":
    main()
