"""Generated tokens/s of the same weights in f16, q8_0, q4_1 and q4_0.

    .venv/bin/python scripts/bench/quants.py [--quant-questions 5] [--quant-tokens 96] [--json out.json]

The embedded model's weights (dequantized once into models/base) are converted to f16 with
llama.cpp's converter and quantized from that f16 to each type; each file answers the same DRD
questions, prompt and generation timed apart, in rounds of alternating order. Load average is
printed with the figures: on shared cores, tok/s say as much about the neighbours as about tmd.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside it, also when a test loads this file
from common import EMBEDDED, finish, new_parser, parse, ratio, settings_from, start_figures  # noqa: E402
from tmd_local.core.registry import ModelRef  # noqa: E402
from tmd_local.runtime.runner import LoadedModule  # noqa: E402


# --- 7. generation speed per quantization of the same model -----------------------------------

BENCH_QUANTS = ("f16", "q8_0", "q4_1", "q4_0")


def quant_speed(args, tmp: Path) -> dict:
    """The embedded model's weights (dequantized once into models/base) converted to f16 with
    llama.cpp's converter and quantized from that f16 to each type; DRD answers to the same
    questions, prompt and generation timed apart."""
    from exporter.quant import quantize
    from exporter.vendor import ensure_converter
    from tmd_local.core.datasets import load_questions
    from tmd_local.core.hf_base import ensure_hf_base

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
    from tmd_local.core import prompts

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


# --- printing ---------------------------------------------------------------------------------

def _print_quants(q: dict) -> None:
    print(f"7. Speed per quantization of the same weights ({q['questions']} DRD answers, {q['max_tokens']} tokens)")
    for quant in BENCH_QUANTS:
        m = q[quant]
        print(f"   {quant:5s}: {m['generated_tokens_per_second']:.1f} generated tok/s, prompt "
              f"{m['prompt_tokens_per_second']:.0f} tok/s, {m['file_mb']:.0f} MiB")


def _rows_quants(q: dict) -> list[tuple[str, ...]]:
    ref = q["q4_1"]["generated_tokens_per_second"]
    return [("7", f"{quant} generated tok/s", f"{q[quant]['generated_tokens_per_second']:.1f}",
             f"q4_1 {ref:.1f}", ratio(q[quant]["generated_tokens_per_second"], ref),
             f"{q[quant]['file_mb']:.0f} MiB") for quant in BENCH_QUANTS]


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--quant-questions", type=int, default=5, help="questions per quantization")
    parser.add_argument("--quant-tokens", type=int, default=96, help="tokens per answer")
    parser.add_argument("--quant-rounds", type=int, default=2, help="rounds over all quantizations")
    return parse(parser)


def main() -> None:
    args = parse_args()
    figures = start_figures(args)
    with tempfile.TemporaryDirectory(prefix="tmd-bench-") as tmp:
        figures["quants"] = quant_speed(args, Path(tmp))
    _print_quants(figures["quants"])
    finish(figures, args, _rows_quants(figures["quants"]))


if __name__ == "__main__":
    main()
