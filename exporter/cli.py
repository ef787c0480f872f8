"""`tmd export`. Module-level imports stay light (click, rich): `tmd --help` imports this file."""

from __future__ import annotations

from pathlib import Path

import click

from tmd_local.terminal.options import THREADS, Real
from tmd_local.terminal.console import console, err_console, one_line_errors
from tmd_local.core.quants import SUPPORTED, parse_quant_list

from .plan import Mode

QUANT_DEFAULT = "f16,q8_0,q4_k_m"


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip().lower() for v in value.split(",") if v.strip()]


@click.command(name="export")
@click.option("--adapters", type=click.Path(path_type=Path), default=None,
              help="runs/<name>/adapters: one peft adapter folder per module (any subset), or one module's folder.")
@click.option("--quant", default=QUANT_DEFAULT, show_default=True,
              help=f"Comma-separated types: {', '.join(SUPPORTED)}.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder, e.g. models/sqa50.")
@click.option("--mode", type=click.Choice([mode.value for mode in Mode]), default="merged", show_default=True,
              help="merged: one GGUF per module and quant; adapter: base GGUFs + a LoRA GGUF per module; both.")
@click.option("--modules", default=None, help="Only these modules, e.g. analyzer,reasoner (default: all found).")
@click.option("--zero-shot", "zero_shot", default=None,
              help="Modules served by the base model itself (mode base), e.g. informant,drd.")
@click.option("--base", default=None,
              help="Base model: registry name or HF folder (default: the base named in the adapters' tmd.json).")
@click.option("--threads", type=THREADS, default=None, help="CPU threads (default: all cores).")
@click.option("--no-verify", is_flag=True, help="Skip comparing each GGUF with the merged model.")
@click.option("--min-agreement", type=Real(0, 1, low_open=True), default=0.99, show_default=True,
              help="Least top-1 agreement an f16/f32 file must reach against the merged model.")
@click.option("--keep-merged/--no-keep-merged", default=True, show_default=True,
              help="Keep the merged HF models in <out>/merged/ after the export.")
@click.option("--ollama", is_flag=True,
              help="Also write <out>/ollama/<module>.Modelfile (FROM, TEMPLATE, stop, num_ctx) for `ollama create`.")
@click.option("--ollama-quant", default=None,
              help="Which of the exported quants the Modelfiles use (default: the bundle's default quant).")
@one_line_errors
def export(adapters, quant, out, mode, modules, zero_shot, base, threads, no_verify, min_agreement,
           keep_merged, ollama, ollama_quant):
    """Merge trained adapters, convert them with llama.cpp's converter, quantize, verify, write a bundle."""
    from .export import ExportOptions, export as run_export
    from .render import RichReporter, print_summary

    options = ExportOptions(adapters=adapters, out=out, quants=parse_quant_list(quant), mode=mode,
                            threads=threads, base=base, modules=_split(modules),
                            zero_shot=_split(zero_shot) or [], verify=not no_verify,
                            min_agreement=min_agreement, keep_merged=keep_merged)
    result = run_export(options, RichReporter(err_console))
    print_summary(console, result)
    if ollama:
        from .ollama import write_modelfiles

        written = write_modelfiles(out, quant=ollama_quant)
        console.print(f"Ollama: {len(written)} Modelfiles in {written[0].parent} "
                      f"(see {written[0].parent / 'README.md'} for `ollama create`)", highlight=False)
