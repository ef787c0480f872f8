"""Thread settings under load: 3 processes at once answering the same DRD prompts with one
generation thread, with OpenMP's default waiting and llama-cpp-python's default prompt threads (one
per core) vs tmd's settings (OMP_WAIT_POLICY=PASSIVE, prompt threads = generation threads).

    .venv/bin/python scripts/bench/threads.py [--thread-questions 3] [--thread-tokens 64] [--json out.json]

Load average is printed with the figures: on shared cores, wall times say as much about the
neighbours as about tmd.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside it, also when a test loads this file
from common import EMBEDDED, finish, new_parser, parse, ratio, settings_from, start_figures, yes  # noqa: E402
from tmd_local.core.registry import resolve_model  # noqa: E402
from tmd_local.runtime.runner import LoadedModule  # noqa: E402


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
    from tmd_local.core import prompts
    from tmd_local.core.datasets import load_questions

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


# --- printing ---------------------------------------------------------------------------------

def _print_threads(t: dict) -> None:
    print(f"6. {t['processes']} concurrent evaluations ({t['questions']} DRD answers of {t['max_tokens']} tokens "
          "each, one generation thread)")
    for label in ("old", "tmd"):
        m = t[label]
        print(f"   {label:3s} (OMP_WAIT_POLICY {m['omp_wait_policy']}, n_threads_batch {m['n_threads_batch']}): "
              f"wall {m['wall_each']} s, CPU {m['cpu_each']} s, all three done in {m['wall_all']:.1f} s")
    print(f"   identical texts: {t['identical_texts']}")


def _rows_threads(t: dict) -> list[tuple[str, ...]]:
    new, old = t["tmd"], t["old"]
    return [("6", "3 concurrent evals: wall", f"{max(new['wall_each']):.1f} s (max)", f"old {max(old['wall_each']):.1f} s",
             ratio(max(new["wall_each"]), max(old["wall_each"])), f"identical texts {yes(t['identical_texts'])}"),
            ("6", "3 concurrent evals: CPU", f"{sum(new['cpu_each']):.1f} s (sum)", f"old {sum(old['cpu_each']):.1f} s",
             ratio(sum(new["cpu_each"]), sum(old["cpu_each"])), "")]


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--thread-questions", type=int, default=3, help="questions per process")
    parser.add_argument("--thread-tokens", type=int, default=64, help="tokens per answer")
    return parse(parser)


def main() -> None:
    args = parse_args()
    figures = start_figures(args)
    with tempfile.TemporaryDirectory(prefix="tmd-bench-") as tmp:
        figures["threads"] = thread_settings(args, Path(tmp))
    _print_threads(figures["threads"])
    finish(figures, args, _rows_threads(figures["threads"]))


if __name__ == "__main__":
    main()
