"""The exporter's producing steps: the merged HF model, GGUFs by llama.cpp's converter, quantized
GGUFs, and the LoRA GGUF. Each is skipped when state.json says it is done from the same inputs.

A mixin of Exporter (exporter/export.py). Merging is done on first use, never ahead: a rerun whose
GGUFs and references are all still valid loads no model at all.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tmd_local import __version__ as TMD_VERSION

from .adapters import AdapterInfo
from .ggufinfo import name_for_llama_cpp
from .plan import LORA_OUTTYPE, Step
from .state import atomic, disk_error, fingerprint


class Making:
    # -- fingerprints: what each product is made from --
    def _merge_fp(self, a: AdapterInfo) -> str:
        return fingerprint("merge/1", a.fingerprint(), self.base_fp)

    def _quant_fp(self, source: Path, quant: str) -> str:
        return fingerprint("quant/1", self.state.record_of(source)["sha256"], quant, self.converter.version)

    def _float_fp(self, step: Step) -> str:
        fp_base = self.base_fp if step.role == "base" else self._merge_fp(self.adapter_of[step.role])
        return fingerprint(fp_base, step.quant, self.converter.version, self._gguf_metadata(step.role))

    def _gguf_metadata(self, role: str, mode: str | None = None) -> dict[str, str]:
        """tmd.* keys written into each GGUF (the converters cannot add them themselves)."""
        if mode is None:
            mode = "base" if role == "base" else "merged"
        meta = {"tmd.role": role, "tmd.mode": mode, "tmd.base": self.base_name, "tmd.version": TMD_VERSION,
                **name_for_llama_cpp(self.base_dir, role.capitalize())}
        a = self.adapter_of.get(role)
        if a is not None:
            for key in ("teacher", "data", "prompt_version"):
                value = getattr(a.tmd, key)
                if value is not None:
                    meta[f"tmd.{key}"] = str(value)
            meta["tmd.source_adapter"] = str(a.path)
            meta["tmd.adapter_sha256"] = a.weights_sha256
        return meta

    # -- the merged HF model --
    def _ensure_merged(self, a: AdapterInfo) -> Path:
        """merged/<role>/ on disk (written once per export, reused while its inputs are unchanged)."""
        from .merge import merge_adapter, merged_is_current

        out_dir = self.out / "merged" / a.module
        if a.module in self._merged_ready:
            return out_dir
        self._merged_ready.add(a.module)
        fp = self._merge_fp(a)
        with self._step(a.module, "merge", "LoRA -> HF") as box:
            if merged_is_current(out_dir, fp):
                box["cached"] = True
            else:
                try:
                    model, tok, notes = merge_adapter(self.base_dir, a, out_dir, fp, threads=self.o.threads)
                except OSError as e:
                    raise disk_error(e, out_dir) or e
                self._models[a.module] = (model, tok)
                for n in notes:
                    self._note(n)
        return out_dir

    def _merged_model(self, a: AdapterInfo) -> tuple[Any, Any]:
        """(model, tokenizer) of the merged module, for its reference: in memory only when the
        export writes no merged folder (adapter mode) and none is current on disk."""
        if a.module not in self._models:
            from .merge import load_base, load_tokenizer, merge_in_memory, merged_is_current

            merged_dir = self.out / "merged" / a.module
            if not self.mode.merges and not merged_is_current(merged_dir, self._merge_fp(a)):
                with self._step(a.module, "merge", "LoRA -> HF (in memory, for the check)"):
                    model, tok, notes = merge_in_memory(self.base_dir, a, self.o.threads)
                self._models[a.module] = (model, tok)
                self.notes.extend(notes)
            else:
                merged = self._ensure_merged(a)
                if a.module not in self._models:
                    self._models[a.module] = (load_base(merged), load_tokenizer(merged))
        return self._models[a.module]

    def _hf_dir(self, role: str) -> Path:
        return self.base_dir if role == "base" else self._ensure_merged(self.adapter_of[role])

    # -- GGUF files --
    def _path(self, step: Step) -> Path:
        return (self.work / "work" if step.in_work else self.out) / step.target

    def _make_float(self, step: Step) -> None:
        """convert_hf_to_gguf.py --outtype <float type>; an f16 kept only as the quantizer's input
        is not rebuilt while every file quantized from it is still done."""
        final = self._path(step)
        final.parent.mkdir(parents=True, exist_ok=True)
        fp = self._float_fp(step)
        with self._step(step.role, "convert", final.name) as box:
            if self.state.is_done(final, fp) or (step.in_work and self._only_feeds_finished_files(final, fp)):
                box["cached"] = True
                return
            started = time.perf_counter()
            self._convert(self.converter.hf_script, [str(self._hf_dir(step.role).resolve()), "--outtype",
                                                     step.quant], final, self._gguf_metadata(step.role))
            self.state.record_file(final, fp, time.perf_counter() - started)

    def _only_feeds_finished_files(self, f16: Path, f16_fp: str) -> bool:
        record = self.state.files.get(self.state.key(f16))
        if not record or record.get("fingerprint") != f16_fp:
            return False
        return all(self.state.is_done(self._path(s), self._quant_fp(f16, s.quant))
                   for s in self.plan if s.action == "quantize" and s.source == f16.name)

    def _make_quantized(self, step: Step) -> None:
        from . import quant

        source = self._path(next(s for s in self.plan if s.action == "convert" and s.target == step.source))
        final = self._path(step)
        fp = self._quant_fp(source, step.quant)
        with self._step(step.role, "quantize", final.name) as box:
            if self.state.is_done(final, fp):
                box["cached"] = True
                return
            with atomic(final) as tmp:
                seconds = quant.quantize(source, tmp, step.quant, self.o.threads,
                                         self.work / "logs" / f"{final.stem}.log")
            self.state.record_file(final, fp, seconds)

    def _make_lora(self, step: Step) -> None:
        a = self.adapter_of[step.role]
        final = self.out / step.target
        meta = self._gguf_metadata(a.module, "adapter")
        fp = fingerprint("lora/1", a.fingerprint(), self.base_fp, self.converter.version, LORA_OUTTYPE, meta)
        with self._step(a.module, "convert", final.name) as box:
            if self.state.is_done(final, fp):
                box["cached"] = True
                return
            started = time.perf_counter()
            self._convert(self.converter.lora_script,
                          [str(a.path.resolve()), "--base", str(self.base_dir.resolve()),
                           "--outtype", LORA_OUTTYPE], final, meta)
            self.state.record_file(final, fp, time.perf_counter() - started)

    def _lora_entry(self, role: str) -> dict:
        a = self.adapter_of[role]
        final = self.out / f"{role}.lora.gguf"
        rec = self.state.record_of(final)
        entry = {"file": final.name, "size": rec["size"], "sha256": rec["sha256"], "type": LORA_OUTTYPE,
                 "rank": a.rank, "lora_alpha": rec.get("lora_alpha") or a.alpha}
        eos = self._adapter_eos(a)  # Checks: what the verify step accepted as this adapter's EOS
        return entry if eos is None else {**entry, "eos_token_id": eos}

    def _convert(self, script, args: list[str], final: Path, meta) -> None:
        """Run one of llama.cpp's converters into a scratch file, then write `final` atomically with
        tmd's metadata added (the converters cannot add non-general keys themselves)."""
        from .ggufinfo import copy_with_metadata

        raw = self.work / "work" / f"{final.stem}.converter.partial"
        raw.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.converter.run(script, [*args, "--outfile", str(raw.resolve())],
                               self.work / "logs" / f"{final.stem}.log", self.o.threads)
            with atomic(final) as tmp:
                copy_with_metadata(raw, tmp, meta)
        except OSError as e:
            raise disk_error(e, final) or e
        finally:
            raw.unlink(missing_ok=True)
