"""`tmd export`: adapters -> merged HF models -> GGUF (llama.cpp's converter) -> quantized GGUFs ->
verified against the merged model -> manifest.json, written last.

Crash safety and resume. Every file is written under a temporary name and renamed when complete;
the manifest of a bundle being (re)written is removed first and written again only at the end, so a
folder with a manifest is always a complete bundle. `.tmd-export/state.json` (atomic) records each
finished file with a fingerprint of its inputs and its sha256; a rerun skips every file whose record,
size and sha256 still match, and every verification whose file and reference are unchanged.

Layout of <out>/:
  manifest.json                       written last (docs/FORMATS.md section 5)
  <role>.<quant>.gguf                 merged mode
  base.<quant>.gguf, <role>.lora.gguf adapter mode (and base.* for zero-shot roles)
  merged/<role>/                      the merged HF model (section 4); --no-keep-merged removes it
  .tmd-export/                        state.json, converter logs, references, work/ (intermediates)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tmd_local import __version__ as TMD_VERSION
from tmd_local.bundle import parse_role
from tmd_local.errors import TmdError
from tmd_local.gguf_file import read_gguf_info
from tmd_local.jsonl import write_json_atomic
from tmd_local.prompts import ROLES
from tmd_local.registry import file_sha256

from . import bundle as bundle_mod
from .adapters import AdapterInfo, check_adapter_mode, check_against_base, discover
from .ggufinfo import name_for_llama_cpp
from .quant import FLOAT_TYPES, NOMINAL_BPW, parse_quants

STATE_DIR = ".tmd-export"
STATE_VERSION = 1
EXACT_TYPES = ("f32", "f16")  # these must agree with the merged model at --min-agreement
LORA_OUTTYPE = "f16"


@dataclass
class ExportOptions:
    adapters: Path | None
    out: Path
    quants: list[str]
    mode: str = "merged"                 # merged | adapter | both
    threads: int | None = None
    base: str | None = None              # registry name or HF folder; default: the adapters' tmd.json
    modules: list[str] | None = None
    zero_shot: list[str] = field(default_factory=list)
    verify: bool = True
    min_agreement: float = 0.99
    keep_merged: bool = True


@dataclass
class StepTime:
    module: str
    step: str
    target: str
    seconds: float
    cached: bool


@dataclass
class ExportResult:
    out: Path
    manifest_path: Path
    manifest: dict
    files: list[dict]            # one row per GGUF (for the summary table)
    steps: list[StepTime]
    checks: dict[str, dict]      # "<role>/<label>" -> verification result
    references: dict[str, dict]  # role -> HF reference (generations for the side-by-side table)
    notes: list[str]
    seconds: float


class Reporter:
    """Progress hooks; the CLI's rich implementation overrides these. The default is silent."""

    def begin(self, total: int) -> None: ...
    def step_started(self, label: str) -> None: ...
    def step_finished(self, label: str, seconds: float, cached: bool) -> None: ...
    def note(self, message: str) -> None: ...
    def end(self) -> None: ...


# --- helpers ---------------------------------------------------------------------------------

def _sha(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _disk_error(e: OSError, where: Path) -> TmdError | None:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return TmdError(f"{where}: out of disk space; free some and rerun (finished files are kept)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TmdError(f"{where}: cannot write ({e.strerror})")
    return None


def _base_fingerprint(base_dir: Path) -> str:
    parts = [(base_dir / "config.json").read_text()]
    for p in sorted(base_dir.glob("*.safetensors")):
        st = p.stat()
        parts.append((p.name, st.st_size, int(st.st_mtime)))
    marker = base_dir / "tmd-base.json"
    if marker.is_file():
        parts.append(marker.read_text())
    return _sha(*parts)


def _param_count(base_dir: Path) -> int:
    total = sum(p.stat().st_size for p in base_dir.glob("*.safetensors"))
    try:
        dtype = json.loads((base_dir / "config.json").read_text()).get("dtype") or \
            json.loads((base_dir / "config.json").read_text()).get("torch_dtype")
    except ValueError:
        dtype = None
    return total // (2 if dtype in ("float16", "bfloat16") else 4)


def training_record(tmd: dict) -> dict | None:
    """tmd.json's `training` with the learning rate, which results must name (adapters trained before
    it was recorded there still have it in `hyperparameters`)."""
    training = tmd.get("training")
    if not training:
        return None
    lr = tmd.get("hyperparameters", {}).get("lr")
    return {**training, "lr": lr} if lr is not None and "lr" not in training else training


def resolve_base(name_or_path: str) -> tuple[str, Path]:
    """(base name for the manifest, HF folder). The trainer builds/caches the HF copy of the GGUF."""
    from trainer.base import ensure_hf_base

    p = Path(name_or_path).expanduser()
    name = p.name if p.is_dir() else name_or_path
    try:
        return name, ensure_hf_base(name_or_path)
    except TmdError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers' own errors, reworded on one line
        raise TmdError(f"base '{name_or_path}': could not build its Hugging Face copy "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


# --- the export ------------------------------------------------------------------------------

class Exporter:
    def __init__(self, options: ExportOptions, reporter: Reporter | None = None,
                 disk_usage: Callable[[Path], Any] | None = None):
        self.o = options
        self.r = reporter or Reporter()
        self.disk_usage = disk_usage
        self.out = Path(options.out)
        self.work = self.out / STATE_DIR
        self.steps: list[StepTime] = []
        self.notes: list[str] = []
        self.references: dict[str, dict] = {}
        self.checks: dict[str, dict] = {}
        self._models: dict[str, Any] = {}  # role -> (merged model, tokenizer) while in memory
        self._merged_ready: set[str] = set()

    # -- validation, before anything is written --
    def validate(self) -> None:
        o = self.o
        if o.mode not in ("merged", "adapter", "both"):
            raise TmdError(f"--mode {o.mode}: expected merged, adapter or both")
        self.quants = parse_quants(o.quants)
        for role in o.zero_shot:
            if role not in ROLES:
                raise TmdError(f"--zero-shot {role}: unknown module (expected {', '.join(ROLES)})")
        if o.modules:
            bad = [m for m in o.modules if m not in ROLES]
            if bad:
                raise TmdError(f"--modules {bad[0]}: unknown module (expected {', '.join(ROLES)})")
        self.adapters: list[AdapterInfo] = discover(o.adapters, o.modules) if o.adapters else []
        if not self.adapters and not o.zero_shot:
            raise TmdError("nothing to export: give --adapters (and/or --zero-shot roles)")
        both = {a.module for a in self.adapters} & set(o.zero_shot)
        if both:
            raise TmdError(f"--zero-shot {sorted(both)[0]}: that module also has an adapter; choose one")
        claims = {a.tmd.get("base") for a in self.adapters if a.tmd.get("base")}
        base = o.base
        if base is None:
            if len(claims) > 1:
                raise TmdError(f"--adapters: the adapters name different bases ({', '.join(sorted(claims))}); "
                               "export them separately")
            from tmd_local.registry import DEFAULT_MODEL

            base = claims.pop() if claims else DEFAULT_MODEL
        self._check_out_path()
        self.base_name, self.base_dir = resolve_base(base)
        for a in self.adapters:
            check_against_base(a, self.base_name, self.base_dir)
            if o.mode in ("adapter", "both"):
                check_adapter_mode(a)
        self.base_fp = _base_fingerprint(self.base_dir)
        self._check_space()
        self._make_out_dir()

    def _check_out_path(self) -> None:
        out = self.out
        for parent in [out, *out.parents]:
            if parent.exists():
                if not parent.is_dir():
                    raise TmdError(f"--out {out}: {parent} is a file, not a folder")
                break

    def _make_out_dir(self) -> None:
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            probe = self.work / f".probe-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise _disk_error(e, self.out) or TmdError(f"--out {self.out}: cannot write there "
                                                       f"({e.strerror})") from None

    def _check_space(self) -> None:
        n = _param_count(self.base_dir)
        per_model = sum(n * NOMINAL_BPW[q] / 8 for q in self.quants) + n * 2 * 2  # + f16 and its copy
        need = 0.0
        merged_like = [a for a in self.adapters if self.o.mode in ("merged", "both")]
        need += len(merged_like) * (per_model + n * 4)  # + the merged fp32 HF model
        if self.o.mode in ("adapter", "both"):
            need += len(self.adapters) * (n * 4 + 50e6)  # merged model for the reference + LoRA
        if self.o.mode in ("adapter", "both") or self.o.zero_shot:
            need += per_model
        if self.out.is_dir():  # a rerun reuses (or replaces) what an earlier run wrote
            need -= sum(p.stat().st_size for p in self.out.rglob("*") if p.is_file())
        existing = next(p for p in [self.out, *self.out.parents] if p.exists())
        free = (self.disk_usage or shutil.disk_usage)(existing).free
        if free < need:
            raise TmdError(f"--out {self.out}: about {need / 1e9:.1f} GB needed, "
                           f"{free / 1e9:.1f} GB free")

    # -- state --
    def _load_state(self) -> None:
        path = self.work / "state.json"
        try:
            state = json.loads(path.read_text())
            if state.get("version") != STATE_VERSION:
                raise ValueError
        except (OSError, ValueError):
            state = {"version": STATE_VERSION, "files": {}, "verify": {}}
        self.state = state

    def _save_state(self) -> None:
        write_json_atomic(self.work / "state.json", self.state)

    def _file_done(self, path: Path, fingerprint: str) -> bool:
        rec = self.state["files"].get(self._key(path))
        if not rec or rec.get("fingerprint") != fingerprint or not path.is_file():
            return False
        return path.stat().st_size == rec["size"] and file_sha256(path) == rec["sha256"]

    def _key(self, path: Path) -> str:
        return str(path.relative_to(self.out))

    def _record_file(self, path: Path, fingerprint: str, seconds: float) -> dict:
        info = read_gguf_info(path)
        rec = {"fingerprint": fingerprint, "size": path.stat().st_size, "sha256": file_sha256(path),
               "seconds": round(seconds, 2), "file_type": info.file_type,
               "bits_per_weight": round(info.bits_per_weight, 4), "tensor_types": info.tensor_types,
               "n_elements": info.n_elements, "chat_template_sha256": info.chat_template_sha256,
               "eos_token_ids": info.eos_token_ids, "tmd": info.tmd, "general_type": info.general_type,
               "lora_alpha": info.lora_alpha}
        self.state["files"][self._key(path)] = rec
        self._save_state()
        return rec

    @contextmanager
    def _step(self, module: str, step: str, target: str) -> Iterator[dict]:
        label = f"{module}: {step} {target}".strip()
        self.r.step_started(label)
        started = time.perf_counter()
        box = {"cached": False}
        yield box
        seconds = time.perf_counter() - started
        self.steps.append(StepTime(module, step, target, seconds, box["cached"]))
        self.r.step_finished(label, seconds, box["cached"])

    @contextmanager
    def _atomic(self, final: Path) -> Iterator[Path]:
        """A temp path beside `final` (not ending in .gguf); renamed onto `final` when the body is done."""
        tmp = final.with_name(f".{final.name}.partial")
        tmp.unlink(missing_ok=True)
        try:
            yield tmp
            _fsync(tmp)
            os.replace(tmp, final)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _disk_error(e, final) or e
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # -- run --
    def run(self) -> ExportResult:
        started = time.perf_counter()
        self.validate()
        self._load_state()
        self._clean_partials()
        self.previous = self._take_down_manifest()
        if self.o.threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(self.o.threads))
        from .vendor import ensure_converter

        self.r.begin(self._count_steps())
        try:
            with self._step("setup", "converter", "llama.cpp") as box:
                self.converter = ensure_converter(on_status=self.r.note)
            modules = self._export_all()
        finally:
            self._models.clear()
            self.r.end()
        for role, entry in self.previous.items():
            modules[role] = entry
            self.notes.append(f"{role}: kept from the bundle's previous manifest")
        for role in ROLES:
            if role not in modules:  # every bundle names all four roles; the rest run zero-shot
                modules[role] = bundle_mod.base_module_entry(note="not exported: zero-shot base model")
                self.notes.append(f"{role}: no adapter, runs zero-shot on the base model")
        top = {"llama_cpp_version": self.converter.version, "default_quant": self._default_quant()}
        if not self._registry_base():
            top["base_model"] = self.base_name
        manifest = bundle_mod.new_manifest(modules, base=self._manifest_base(), **top)
        try:
            path = bundle_mod.write_manifest(self.out, manifest)
        except OSError as e:
            raise _disk_error(e, self.out) or e
        self._finish()
        bundle = bundle_mod.read_manifest(self.out, check="none")
        listed = {f.path.name for f in bundle_mod.listed_files(bundle.roles.values())}
        return ExportResult(self.out, path, manifest, self._file_rows(listed), self.steps, self.checks,
                            self.references, self.notes, time.perf_counter() - started)

    def _registry_base(self) -> bool:
        from tmd_local.registry import EMBEDDED

        return self.base_name in EMBEDDED

    def _manifest_base(self) -> str:
        """The manifest's `base`: a registry name, else the bundle's own base GGUF."""
        if self._registry_base():
            return self.base_name
        return f"base.{self._default_quant()}.gguf"

    def _default_quant(self) -> str:
        for q in bundle_mod.QUANT_PREFERENCE:
            if q in self.quants:
                return q
        return self.quants[0]

    def _count_steps(self) -> int:
        n_files = len(self.quants) + (0 if "f16" in self.quants else 1)
        total = 1
        if self.o.mode in ("merged", "both"):
            total += len(self.adapters) * (1 + n_files + (len(self.quants) if self.o.verify else 0))
        if self.o.mode in ("adapter", "both"):
            total += len(self.adapters) * (1 + (len(self.quants) if self.o.verify else 0))
            if self.o.mode == "adapter" and self.o.verify:
                total += len(self.adapters)  # merge, for the reference
        if self._needs_base_files():
            total += n_files + (len(self.quants) if self.o.verify and self.o.zero_shot else 0)
        return total

    def _needs_base_files(self) -> bool:
        """Base GGUFs: for adapter mode, zero-shot roles, and as the manifest's `base` when the
        base is not a registry model (roles left out then run on that file)."""
        return (self.o.mode in ("adapter", "both") and bool(self.adapters) or bool(self.o.zero_shot)
                or not self._registry_base())

    def _clean_partials(self) -> None:
        for p in list(self.out.glob(".*.partial")) + list(self.out.glob("merged/*.partial")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def _take_down_manifest(self) -> dict:
        """Remove manifest.json before changing any file (kept aside for carrying roles over)."""
        current = self.out / bundle_mod.MANIFEST
        kept = self.work / "previous-manifest.json"
        if current.is_file():
            try:
                data = json.loads(current.read_text())
            except ValueError:
                data = None
            if data is not None:
                write_json_atomic(kept, data)
            current.unlink()
        try:
            data = json.loads(kept.read_text())
            modules = data.get("modules", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}
        ours = {a.module for a in self.adapters} | set(self.o.zero_shot)
        keep = {}
        for role, entry in modules.items():
            if role in ours or role not in ROLES:
                continue
            if isinstance(entry, dict) and entry.get("mode") == "base" and not entry.get("files"):
                continue  # a zero-shot placeholder; written again if still needed
            try:  # checked as the bundle's own manifest: its files are named relative to self.out
                spec = parse_role(role, entry, current)
                bundle_mod.check_files(bundle_mod.listed_files([spec]), full=True)
                keep[role] = entry
            except TmdError as e:
                self.notes.append(f"{role}: dropped from the previous manifest ({e})")
        return keep

    def _finish(self) -> None:
        shutil.rmtree(self.work / "work", ignore_errors=True)
        (self.work / "previous-manifest.json").unlink(missing_ok=True)
        if not self.o.keep_merged:
            shutil.rmtree(self.out / "merged", ignore_errors=True)

    # -- the pipeline --
    def _export_all(self) -> dict[str, dict]:
        modules: dict[str, dict] = {}
        base_files: dict[str, dict] = {}
        if self._needs_base_files():
            base_files = self._base_gguf_files()
        for a in self.adapters:
            entry = self._module_meta(a)
            merged_files: dict[str, dict] = {}
            if self.o.mode in ("merged", "both"):
                merged_files = self._merged_gguf_files(a)
            adapter_entry = None
            if self.o.mode in ("adapter", "both"):
                adapter_entry = self._lora_file(a)
                checked = {}
                for q, f in base_files.items():
                    checked[q] = {**f, **self._verify_entry(a.module, self.out / f["file"],
                                                            self.out / adapter_entry["file"],
                                                            q, kind="base+lora")}
                    checked[q].pop("tmd", None)
                if self.o.mode == "adapter":
                    entry.update(mode="adapter", files=checked, adapter=adapter_entry)
                else:
                    adapter_entry["base_files"] = checked
            if self.o.mode in ("merged", "both"):
                entry.update(mode="merged", files=merged_files)
                if adapter_entry:
                    entry["adapter"] = adapter_entry
            if self.o.keep_merged and (self.out / "merged" / a.module).is_dir():
                entry["merged_dir"] = f"merged/{a.module}"
            modules[a.module] = entry
            self._models.pop(a.module, None)
        for role in self.o.zero_shot:
            files = {q: {**f, **self._verify_entry("base", self.out / f["file"], None, q, kind="base")}
                     for q, f in base_files.items()}
            modules[role] = bundle_mod.base_module_entry(files=files)
        return modules

    def _module_meta(self, a: AdapterInfo) -> dict:
        return {"mode": None, "source_adapter": str(a.path), "adapter_sha256": a.weights_sha256,
                "teacher": a.tmd.get("teacher"), "data": a.tmd.get("data"),
                "prompt_version": a.tmd.get("prompt_version"), "rank": a.rank, "lora_alpha": a.alpha,
                "trained_with_tmd": a.tmd.get("tmd_version"), "training": training_record(a.tmd)}

    def _gguf_metadata(self, role: str, mode: str, a: AdapterInfo | None) -> dict[str, str]:
        meta = {"tmd.role": role, "tmd.mode": mode, "tmd.base": self.base_name, "tmd.version": TMD_VERSION,
                **name_for_llama_cpp(self.base_dir, role.capitalize())}
        if a is not None:
            for key in ("teacher", "data", "prompt_version"):
                if a.tmd.get(key) is not None:
                    meta[f"tmd.{key}"] = str(a.tmd[key])
            meta["tmd.source_adapter"] = str(a.path)
            meta["tmd.adapter_sha256"] = a.weights_sha256
        return meta

    # merged HF model + its reference
    def _merge_fp(self, a: AdapterInfo) -> str:
        return _sha("merge/1", a.fingerprint(), self.base_fp)

    def _ensure_merged(self, a: AdapterInfo) -> Path:
        from .merge import merge_adapter, merged_is_current

        out_dir = self.out / "merged" / a.module
        fp = self._merge_fp(a)
        if a.module in self._merged_ready:
            return out_dir
        self._merged_ready.add(a.module)
        with self._step(a.module, "merge", "LoRA -> HF") as box:
            if merged_is_current(out_dir, fp):
                box["cached"] = True
            else:
                try:
                    model, tok, notes = merge_adapter(self.base_dir, a, out_dir, fp, threads=self.o.threads)
                except OSError as e:
                    raise _disk_error(e, out_dir) or e
                self._models[a.module] = (model, tok)
                for n in notes:
                    self.r.note(n)
                    self.notes.append(n)
        return out_dir

    def _reference(self, role: str, fp: str, load: Callable[[], tuple[Any, Any]], ref_role: str) -> dict:
        from .verify import REFERENCE_VERSION, compute_reference

        path = self.work / "references" / f"{role}.json"
        key = _sha(fp, REFERENCE_VERSION)
        if role in self.references:
            return self.references[role]
        try:
            ref = json.loads(path.read_text())
            if ref.get("key") != key:
                raise ValueError
        except (OSError, ValueError):
            model, tok = load()
            ref = compute_reference(model, tok, ref_role, self.o.threads)
            ref["key"] = key
            write_json_atomic(path, ref)
        self.references[role] = ref
        return ref

    def _module_reference(self, a: AdapterInfo) -> dict:
        def load():
            if a.module not in self._models:
                from .merge import load_base, load_tokenizer, merge_in_memory, merged_is_current

                merged_dir = self.out / "merged" / a.module
                if self.o.mode == "adapter" and not merged_is_current(merged_dir, self._merge_fp(a)):
                    with self._step(a.module, "merge", "LoRA -> HF (in memory, for the check)"):
                        model, tok, notes = merge_in_memory(self.base_dir, a, self.o.threads)
                    self._models[a.module] = (model, tok)
                    self.notes.extend(notes)
                else:
                    merged = self._ensure_merged(a)
                    if a.module not in self._models:
                        self._models[a.module] = (load_base(merged), load_tokenizer(merged))
            return self._models[a.module]
        return self._reference(a.module, self._merge_fp(a), load, a.module)

    def _base_reference(self) -> dict:
        def load():
            from .merge import load_base, load_tokenizer

            return load_base(self.base_dir), load_tokenizer(self.base_dir)
        return self._reference("base", self.base_fp, load, "drd")

    # GGUF files
    def _convert_hf(self, module: str, hf_dir: Callable[[], Path], final: Path, outtype: str,
                    fp: str, meta: dict[str, str]) -> dict:
        with self._step(module, "convert", final.name) as box:
            if self._file_done(final, fp):
                box["cached"] = True
                return self.state["files"][self._key(final)]
            source = hf_dir()
            started = time.perf_counter()
            self._convert(self.converter.hf_script, [str(Path(source).resolve()), "--outtype", outtype],
                          final, meta)
            return self._record_file(final, fp, time.perf_counter() - started)

    def _convert(self, script, args: list[str], final: Path, meta) -> None:
        """Run one of llama.cpp's converters into a scratch file, then write `final` atomically with
        tmd's metadata added (the converters cannot add non-general keys themselves)."""
        from .ggufinfo import copy_with_metadata

        raw = self.work / "work" / f"{final.stem}.converter.partial"
        raw.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.converter.run(script, [*args, "--outfile", str(raw.resolve())],
                               self.work / "logs" / f"{final.stem}.log", self.o.threads)
            with self._atomic(final) as tmp:
                copy_with_metadata(raw, tmp, meta)
        except OSError as e:
            raise _disk_error(e, final) or e
        finally:
            raw.unlink(missing_ok=True)

    def _quant_fp(self, source: Path, quant: str) -> str:
        return _sha("quant/1", self.state["files"][self._key(source)]["sha256"], quant, self.converter.version)

    def _quantize(self, module: str, source: Path, final: Path, quant: str) -> dict:
        from .quant import quantize

        fp = self._quant_fp(source, quant)
        with self._step(module, "quantize", final.name) as box:
            if self._file_done(final, fp):
                box["cached"] = True
                return self.state["files"][self._key(final)]
            with self._atomic(final) as tmp:
                seconds = quantize(source, tmp, quant, self.o.threads,
                                   self.work / "logs" / f"{final.stem}.log")
            return self._record_file(final, fp, seconds)

    def _gguf_set(self, stem: str, module: str, hf_dir: Callable[[], Path], fp_base: str,
                  meta: dict[str, str]) -> dict[str, Path]:
        """<stem>.<quant>.gguf for every requested quant (f16 first, kept in work/ if not requested)."""
        paths: dict[str, Path] = {}
        f16 = (self.out if "f16" in self.quants else self.work / "work") / f"{stem}.f16.gguf"
        f16.parent.mkdir(parents=True, exist_ok=True)
        f16_fp = _sha(fp_base, "f16", self.converter.version, meta)
        if self._only_feeds_finished_files(f16, f16_fp, stem):
            with self._step(module, "convert", f16.name) as box:
                box["cached"] = True
        else:
            self._convert_hf(module, hf_dir, f16, "f16", f16_fp, meta)
        for q in self.quants:
            final = self.out / f"{stem}.{q}.gguf"
            if q == "f16":
                pass
            elif q in FLOAT_TYPES:
                self._convert_hf(module, hf_dir, final, q, _sha(fp_base, q, self.converter.version, meta), meta)
            else:
                self._quantize(module, f16, final, q)
            paths[q] = final
        return paths

    def _only_feeds_finished_files(self, f16: Path, f16_fp: str, stem: str) -> bool:
        """An f16 kept only as the quantizer's input (work/, removed when an export finishes) need not
        be rebuilt on a rerun when every file quantized from this very f16 is still done."""
        record = self.state["files"].get(self._key(f16))
        if "f16" in self.quants or not record or record.get("fingerprint") != f16_fp:
            return False
        return all(self._file_done(self.out / f"{stem}.{q}.gguf", self._quant_fp(f16, q))
                   for q in self.quants if q not in FLOAT_TYPES)

    def _merged_gguf_files(self, a: AdapterInfo) -> dict[str, dict]:
        meta = self._gguf_metadata(a.module, "merged", a)
        paths = self._gguf_set(a.module, a.module, lambda: self._ensure_merged(a), self._merge_fp(a), meta)
        return {q: self._verify_entry(a.module, p, None, q, kind="merged", adapter=a)
                for q, p in paths.items()}

    def _base_gguf_files(self) -> dict[str, dict]:
        meta = self._gguf_metadata("base", "base", None)
        paths = self._gguf_set("base", "base", lambda: self.base_dir, self.base_fp, meta)
        return {q: self._file_entry(p) for q, p in paths.items()}

    def _lora_file(self, a: AdapterInfo) -> dict:
        final = self.out / f"{a.module}.lora.gguf"
        meta = self._gguf_metadata(a.module, "adapter", a)
        fp = _sha("lora/1", a.fingerprint(), self.base_fp, self.converter.version, LORA_OUTTYPE, meta)
        with self._step(a.module, "convert", final.name) as box:
            if self._file_done(final, fp):
                box["cached"] = True
            else:
                started = time.perf_counter()
                self._convert(self.converter.lora_script,
                              [str(a.path.resolve()), "--base", str(self.base_dir.resolve()),
                               "--outtype", LORA_OUTTYPE], final, meta)
                self._record_file(final, fp, time.perf_counter() - started)
        rec = self.state["files"][self._key(final)]
        return {"file": final.name, "size": rec["size"], "sha256": rec["sha256"], "type": LORA_OUTTYPE,
                "rank": a.rank, "lora_alpha": rec.get("lora_alpha") or a.alpha}

    def _file_entry(self, path: Path) -> dict:
        rec = self.state["files"][self._key(path)]
        return {"file": path.name, "size": rec["size"], "sha256": rec["sha256"],
                "file_type": rec["file_type"], "bits_per_weight": rec["bits_per_weight"],
                "tensor_types": rec["tensor_types"], "chat_template_sha256": rec["chat_template_sha256"],
                "eos_token_ids": rec["eos_token_ids"], "tmd": rec["tmd"]}

    # verification
    def _verify_entry(self, role: str, path: Path, lora: Path | None, quant: str, kind: str,
                      adapter: AdapterInfo | None = None) -> dict:
        entry = self._file_entry(path)
        entry.pop("tmd", None)
        if not entry["chat_template_sha256"]:
            raise TmdError(f"{path.name}: the GGUF has no tokenizer.chat_template")
        if not entry["eos_token_ids"]:
            raise TmdError(f"{path.name}: the GGUF has no EOS token id")
        if not self.o.verify:
            return entry
        from .verify import check_gguf

        if role == "base":
            ref = self._base_reference()
        else:
            a = adapter or next(x for x in self.adapters if x.module == role)
            ref = self._module_reference(a)
        lora_sha = self.state["files"][self._key(lora)]["sha256"] if lora else None
        key = _sha("verify/1", entry["sha256"], lora_sha, ref["key"])
        label = f"{path.name}" + (f" + {lora.name}" if lora else "")
        with self._step(role, "verify", label) as box:
            cached = self.state["verify"].get(label)
            if cached and cached.get("key") == key:
                box["cached"] = True
                result = cached["result"]
            else:
                try:
                    result = check_gguf(path, ref, lora, self.o.threads)
                except OSError as e:
                    raise _disk_error(e, path) or e
                self.state["verify"][label] = {"key": key, "result": result}
                self._save_state()
        self.checks[f"{role}/{label}"] = {**result, "quant": quant, "kind": kind, "file": path.name,
                                          "lora": lora.name if lora else None}
        self._enforce(role, label, quant, entry, ref, result, lora is not None)
        gens = result["generations"]
        entry.update(top1_agreement=result["top1_agreement"], agreement_positions=result["positions"],
                     generation_match=round(sum(g["match"] for g in gens) / len(gens), 3) if gens else None,
                     tokenizer_match=result["tokenizer_match"],
                     verified_against="merged HF model" if role != "base" else "base HF model")
        return entry

    def _enforce(self, role, label, quant, entry, ref, result, with_lora) -> None:
        if entry["chat_template_sha256"] is None:
            raise TmdError(f"{label}: the GGUF has no tokenizer.chat_template")
        if entry["chat_template_sha256"] != ref["chat_template_sha256"]:
            raise TmdError(f"{label}: the GGUF's chat template differs from the merged model's tokenizer")
        if ref["eos_token_id"] not in entry["eos_token_ids"]:
            raise TmdError(f"{label}: the GGUF's EOS ids {entry['eos_token_ids']} lack the tokenizer's "
                           f"EOS {ref['eos_token_id']}")
        if not result["tokenizer_match"]:
            msg = f"{role}: {label}: llama.cpp tokenizes the check texts differently from transformers"
            if msg not in self.notes:
                self.notes.append(msg)
                self.r.note(msg)
        if quant in EXACT_TYPES and result["top1_agreement"] < self.o.min_agreement:
            raise TmdError(f"{label}: top-1 agreement with the {'merged' if role != 'base' else 'base'} "
                           f"model is {result['top1_agreement']:.4f} < {self.o.min_agreement} "
                           f"(see {self.work / 'logs'}); the export is not usable")

    def _file_rows(self, listed: set[str]) -> list[dict]:
        rows = []
        for key, rec in self.state["files"].items():
            if key not in listed or not (self.out / key).is_file():
                continue
            rows.append({"file": key, **{k: rec[k] for k in ("size", "file_type", "bits_per_weight",
                                                              "tensor_types", "seconds", "general_type")}})
        rows.sort(key=lambda r: r["file"])
        return rows


def export(options: ExportOptions, reporter: Reporter | None = None, **kwargs) -> ExportResult:
    return Exporter(options, reporter, **kwargs).run()
