"""The exporter's checks: each GGUF against the Hugging Face model it came from (the merged model,
or the base for zero-shot files), with references computed once per model and cached on disk.

A mixin of Exporter (exporter/export.py): it uses the exporter's options, state, step reporting and
merged models. A check that fails where the file cannot be used (chat template, EOS, top-1 agreement
of an exact type) stops the export with a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tmd_local.core.errors import TmdError
from tmd_local.core.jsonl import read_json, write_json_atomic

from .adapters import AdapterInfo
from .state import disk_error, fingerprint

EXACT_TYPES = ("f32", "f16")  # these must agree with the merged model at --min-agreement


class Checks:
    def _verify_entry(self, role: str, path: Path, lora: Path | None, quant: str, kind: str,
                      adapter: AdapterInfo | None = None) -> dict:
        """The manifest entry of `path`, with the check's figures when --verify (the default)."""
        entry = self.state.file_entry(path)
        entry.pop("tmd", None)
        if not entry["chat_template_sha256"]:
            raise TmdError(f"{path.name}: the GGUF has no tokenizer.chat_template")
        if not entry["eos_token_ids"]:
            raise TmdError(f"{path.name}: the GGUF has no EOS token id")
        if not self.o.verify:
            return entry
        ref = self._base_reference() if role == "base" else self._module_reference(adapter)
        label = f"{path.name}" + (f" + {lora.name}" if lora else "")
        result = self._check(role, path, lora, label, ref)
        self.checks[f"{role}/{label}"] = {**result, "quant": quant, "kind": kind, "file": path.name,
                                          "lora": lora.name if lora else None}
        # A LoRA trained to end at another token than the base's EOS runs with that EOS (the manifest's
        # adapter.eos_token_id: the runtime loads the base with it), so that token counts as the GGUF's.
        loaded_eos = self._adapter_eos(adapter) if lora and adapter is not None else None
        self._enforce(role, label, quant, entry, ref, result, loaded_eos)
        gens = result["generations"]
        entry.update(top1_agreement=result["top1_agreement"], agreement_positions=result["positions"],
                     generation_match=round(sum(g["match"] for g in gens) / len(gens), 3) if gens else None,
                     tokenizer_match=result["tokenizer_match"],
                     verified_against="merged HF model" if role != "base" else "base HF model")
        return entry

    def _check(self, role: str, path: Path, lora: Path | None, label: str, ref: dict) -> dict:
        """check_gguf's result, reused from state.json while the file, LoRA and reference are unchanged."""
        from .verify import check_gguf

        lora_sha = self.state.record_of(lora)["sha256"] if lora else None
        key = fingerprint("verify/1", self.state.record_of(path)["sha256"], lora_sha, ref["key"])
        with self._step(role, "verify", label) as box:
            cached = self.state.verify.get(label)
            if cached and cached.get("key") == key:
                box["cached"] = True
                return cached["result"]
            try:
                result = check_gguf(path, ref, lora, self.o.threads)
            except OSError as e:
                raise disk_error(e, path) or e
            self.state.verify[label] = {"key": key, "result": result}
            self.state.save()
            return result

    def _adapter_eos(self, adapter) -> int | None:
        """adapter.eos_token_id of the manifest (the verify step and the LoRA entry both need it):
        read once per adapter, since it loads two tokenizers."""
        from .merge import adapter_eos_override

        cache = self.__dict__.setdefault("_adapter_eos_cache", {})
        if adapter.path not in cache:
            cache[adapter.path] = adapter_eos_override(self.base_dir, adapter.path)
        return cache[adapter.path]

    def _enforce(self, role, label, quant, entry, ref, result, loaded_eos: int | None = None) -> None:
        if entry["chat_template_sha256"] != ref["chat_template_sha256"]:
            raise TmdError(f"{label}: the GGUF's chat template differs from the merged model's tokenizer")
        if ref["eos_token_id"] not in entry["eos_token_ids"] and ref["eos_token_id"] != loaded_eos:
            raise TmdError(f"{label}: the GGUF's EOS ids {entry['eos_token_ids']} lack the tokenizer's "
                           f"EOS {ref['eos_token_id']}")
        if not result["tokenizer_match"]:
            self._note_once(f"{role}: {label}: llama.cpp tokenizes the check texts differently from transformers")
        if quant in EXACT_TYPES and result["top1_agreement"] < self.o.min_agreement:
            raise TmdError(f"{label}: top-1 agreement with the {'merged' if role != 'base' else 'base'} "
                           f"model is {result['top1_agreement']:.4f} < {self.o.min_agreement} "
                           f"(see {self.work / 'logs'}); the export is not usable")

    # references: what the HF model says on the check texts, cached per model in references/
    def _reference(self, role: str, fp: str, load: Callable[[], tuple[Any, Any]], ref_role: str) -> dict:
        from .verify import REFERENCE_VERSION, compute_reference

        path = self.work / "references" / f"{role}.json"
        key = fingerprint(fp, REFERENCE_VERSION)
        if role in self.references:
            return self.references[role]
        try:  # a cache: missing, damaged or stale means "compute it again"
            ref = read_json(path, "reference file")
            if not isinstance(ref, dict) or ref.get("key") != key:
                raise ValueError
        except (TmdError, ValueError):
            model, tok = load()
            ref = compute_reference(model, tok, ref_role, self.o.threads)
            ref["key"] = key
            write_json_atomic(path, ref)
        self.references[role] = ref
        return ref

    def _module_reference(self, a: AdapterInfo) -> dict:
        return self._reference(a.module, self._merge_fp(a), lambda: self._merged_model(a), a.module)

    def _base_reference(self) -> dict:
        def load():
            from .merge import load_base, load_tokenizer

            return load_base(self.base_dir), load_tokenizer(self.base_dir)
        return self._reference("base", self.base_fp, load, "drd")
