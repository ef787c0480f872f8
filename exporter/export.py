"""`tmd export`: adapters -> merged HF models -> GGUF (llama.cpp's converter) -> quantized GGUFs ->
verified against the merged model -> manifest.json, written last.

Crash safety and resume. Every file is written under a temporary name and renamed when complete;
the manifest of a bundle being (re)written is removed first and written again only at the end, so a
folder with a manifest is always a complete bundle. `.tmd-export/state.json` (atomic) records each
finished file with a fingerprint of its inputs and its sha256; a rerun skips every file whose record,
size and sha256 still match, and every verification whose file and reference are unchanged.

The work is planned before it runs (exporter/plan.py: one pure plan that gives the progress bar's
step count, the free-space estimate and the order of execution); the steps that produce files are in
exporter/making.py, the checks in exporter/checks.py, state.json and atomic writes in exporter/state.py.
This module validates the options, runs the plan and writes the manifest (one entry function per mode).

Layout of <out>/:
  manifest.json                       written last (docs/FORMATS.md section 5)
  <role>.<quant>.gguf                 merged mode
  base.<quant>.gguf, <role>.lora.gguf adapter mode (and base.* for zero-shot roles)
  merged/<role>/                      the merged HF model (section 4); --no-keep-merged removes it
  .tmd-export/                        state.json, converter logs, references, work/ (intermediates)
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tmd_local.core.errors import TmdError
from tmd_local.core.jsonl import read_json
from tmd_local.core.quants import parse_quant_list, preferred
from tmd_local.core.roles import ROLES, role_named

from . import bundle as bundle_mod
from .adapters import AdapterInfo, check_adapter_mode, check_against_base, discover
from .checks import Checks
from .making import Making
from .plan import Mode, Request, Step, plan, space_needed, step_count
from .state import STATE_DIR, ExportState, disk_error, fingerprint


@dataclass
class ExportOptions:
    adapters: Path | None
    out: Path
    quants: list[str]
    mode: str = "merged"                 # merged | adapter | both (plan.Mode)
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


def _base_fingerprint(base_dir: Path) -> str:
    parts = [(base_dir / "config.json").read_text()]
    for p in sorted(base_dir.glob("*.safetensors")):
        st = p.stat()
        parts.append((p.name, st.st_size, int(st.st_mtime)))
    marker = base_dir / "tmd-base.json"
    if marker.is_file():
        parts.append(marker.read_text())
    return fingerprint(*parts)


def _param_count(base_dir: Path) -> int:
    total = sum(p.stat().st_size for p in base_dir.glob("*.safetensors"))
    try:
        config = read_json(base_dir / "config.json", "model config")
        dtype = (config.get("dtype") or config.get("torch_dtype")) if isinstance(config, dict) else None
    except TmdError:
        dtype = None
    return total // (2 if dtype in ("float16", "bfloat16") else 4)


def resolve_base(name_or_path: str) -> tuple[str, Path]:
    """(base name for the manifest, HF folder). tmd_local.core.hf_base builds/caches the HF copy of the GGUF."""
    from tmd_local.core.hf_base import ensure_hf_base

    p = Path(name_or_path).expanduser()
    name = p.name if p.is_dir() else name_or_path
    try:
        return name, ensure_hf_base(name_or_path)
    except TmdError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers' own errors, reworded on one line
        raise TmdError(f"base '{name_or_path}': could not build its Hugging Face copy "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def parse_mode(text: str) -> Mode:
    try:
        return Mode(text)
    except ValueError:
        raise TmdError(f"--mode {text}: expected merged, adapter or both") from None


# --- the export ------------------------------------------------------------------------------

class Exporter(Making, Checks):
    """validate() the options, plan() the steps, run them in order, then write the manifest last."""

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
        self.entries: dict[tuple[str, str, str], dict] = {}  # (role, kind, quant) -> manifest file entry
        self._models: dict[str, Any] = {}  # role -> (merged model, tokenizer) while in memory
        self._merged_ready: set[str] = set()

    # -- validation, before anything is written --
    def validate(self) -> None:
        o = self.o
        self.mode = parse_mode(o.mode)
        self.quants = parse_quant_list(o.quants)
        for role in o.zero_shot:
            role_named(role, "--zero-shot")
        for role in o.modules or ():
            role_named(role, "--modules")
        self.adapters: list[AdapterInfo] = discover(o.adapters, o.modules) if o.adapters else []
        self.adapter_of = {a.module: a for a in self.adapters}
        if not self.adapters and not o.zero_shot:
            raise TmdError("nothing to export: give --adapters (and/or --zero-shot roles)")
        both = set(self.adapter_of) & set(o.zero_shot)
        if both:
            raise TmdError(f"--zero-shot {sorted(both)[0]}: that module also has an adapter; choose one")
        self._check_out_path()
        self.base_name, self.base_dir = resolve_base(self._base_choice())
        for a in self.adapters:
            check_against_base(a, self.base_name, self.base_dir)
            if self.mode.ships_lora:
                check_adapter_mode(a)
        self.base_fp = _base_fingerprint(self.base_dir)
        self.plan = plan(self._request())
        self._check_space()
        self._make_out_dir()

    def _base_choice(self) -> str:
        """--base, else the base the adapters' tmd.json name (they must agree), else the default model."""
        if self.o.base is not None:
            return self.o.base
        claims = {a.tmd.base for a in self.adapters if a.tmd.base}
        if len(claims) > 1:
            raise TmdError(f"--adapters: the adapters name different bases ({', '.join(sorted(claims))}); "
                           "export them separately")
        from tmd_local.core.registry import DEFAULT_MODEL

        return claims.pop() if claims else DEFAULT_MODEL

    def _request(self) -> Request:
        return Request(mode=self.mode, quants=tuple(self.quants), adapter_roles=tuple(self.adapter_of),
                       zero_shot=tuple(self.o.zero_shot), verify=self.o.verify,
                       base_files=self._needs_base_files())

    def _needs_base_files(self) -> bool:
        """Base GGUFs: for adapter mode, zero-shot roles, and as the manifest's `base` when the
        base is not a registry model (roles left out then run on that file)."""
        return (self.mode.ships_lora and bool(self.adapters) or bool(self.o.zero_shot)
                or not self._registry_base())

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
            raise disk_error(e, self.out) or TmdError(f"--out {self.out}: cannot write there "
                                                      f"({e.strerror})") from None

    def _check_space(self) -> None:
        need = space_needed(self.plan, _param_count(self.base_dir))
        if self.out.is_dir():  # a rerun reuses (or replaces) what an earlier run wrote
            need -= sum(p.stat().st_size for p in self.out.rglob("*") if p.is_file())
        existing = next(p for p in [self.out, *self.out.parents] if p.exists())
        free = (self.disk_usage or shutil.disk_usage)(existing).free
        if free < need:
            raise TmdError(f"--out {self.out}: about {need / 1e9:.1f} GB needed, "
                           f"{free / 1e9:.1f} GB free")

    # -- progress --
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

    def _note(self, message: str) -> None:
        self.r.note(message)
        self.notes.append(message)

    def _note_once(self, message: str) -> None:
        if message not in self.notes:
            self._note(message)

    # -- run --
    def run(self) -> ExportResult:
        started = time.perf_counter()
        self.validate()
        self.state = ExportState(self.out)
        self._clean_partials()
        ours = set(self.adapter_of) | set(self.o.zero_shot)
        self.previous = bundle_mod.take_down_manifest(self.out, self.work, ours, self.notes)
        if self.o.threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(self.o.threads))
        self.r.begin(step_count(self.plan))
        try:
            for before, step in zip([None, *self.plan], self.plan):
                if before is not None and before.role != step.role:
                    self._models.pop(before.role, None)  # one merged model in memory at a time
                self.EXECUTE[step.action](self, step)
        finally:
            self._models.clear()
            self.r.end()
        manifest = self._manifest(self._module_entries())
        try:
            path = bundle_mod.write_manifest(self.out, manifest)
        except OSError as e:
            raise disk_error(e, self.out) or e
        self._finish()
        bundle = bundle_mod.read_manifest(self.out, check="none")
        listed = {f.path.name for f in bundle_mod.listed_files(bundle.roles.values())}
        return ExportResult(self.out, path, manifest, self.state.file_rows(listed), self.steps, self.checks,
                            self.references, self.notes, time.perf_counter() - started)

    # -- executing the plan: one method per action --
    def _setup_converter(self, step: Step) -> None:
        from .vendor import ensure_converter

        with self._step(step.role, step.action, step.target):
            self.converter = ensure_converter(on_status=self.r.note)

    def _merge_on_first_use(self, step: Step) -> None:
        """Nothing yet: the merged model is made by the first step that needs it (_ensure_merged,
        _merged_model), so a rerun whose files and references are all valid loads no model."""

    def _check_file(self, step: Step) -> None:
        lora = self.out / step.source if step.source else None
        role = "base" if step.kind == "base" else step.role
        entry = self._verify_entry(role, self.out / step.target, lora, step.quant, kind=step.kind,
                                   adapter=self.adapter_of.get(step.role))
        if step.kind == "base":  # a zero-shot role's files keep the base file's tmd.* keys
            entry = {**self.state.file_entry(self.out / step.target), **entry}
        self.entries[(step.role, step.kind, step.quant)] = entry

    EXECUTE = {"converter": _setup_converter, "convert": Making._make_float, "quantize": Making._make_quantized,
               "merge": _merge_on_first_use, "lora": Making._make_lora, "verify": _check_file,
               "record": _check_file}

    # -- the manifest's module entries: one function per mode --
    def _files(self, role: str, kind: str) -> dict[str, dict]:
        return {q: self.entries[(role, kind, q)] for q in self.quants}

    def _merged_entry(self, a: AdapterInfo) -> dict:
        return {**self._module_meta(a), "mode": "merged", "files": self._files(a.module, "merged")}

    def _adapter_entry(self, a: AdapterInfo) -> dict:
        return {**self._module_meta(a), "mode": "adapter", "files": self._files(a.module, "base+lora"),
                "adapter": self._lora_entry(a.module)}

    def _both_entry(self, a: AdapterInfo) -> dict:
        adapter = {**self._lora_entry(a.module), "base_files": self._files(a.module, "base+lora")}
        return {**self._merged_entry(a), "adapter": adapter}

    MODE_ENTRIES = {Mode.MERGED: _merged_entry, Mode.ADAPTER: _adapter_entry, Mode.BOTH: _both_entry}

    def _module_meta(self, a: AdapterInfo) -> dict:
        return {"mode": None, "source_adapter": str(a.path), "adapter_sha256": a.weights_sha256,
                "teacher": a.tmd.teacher, "data": a.tmd.data, "prompt_version": a.tmd.prompt_version,
                "rank": a.rank, "lora_alpha": a.alpha, "trained_with_tmd": a.tmd.tmd_version,
                "training": a.tmd.results_training()}

    def _module_entries(self) -> dict[str, dict]:
        modules: dict[str, dict] = {}
        for a in self.adapters:
            entry = self.MODE_ENTRIES[self.mode](self, a)
            if self.o.keep_merged and (self.out / "merged" / a.module).is_dir():
                entry["merged_dir"] = f"merged/{a.module}"
            modules[a.module] = entry
        for role in self.o.zero_shot:
            modules[role] = bundle_mod.base_module_entry(files=self._files(role, "base"))
        for role, entry in self.previous.items():
            modules[role] = entry
            self.notes.append(f"{role}: kept from the bundle's previous manifest")
        for role in ROLES:
            if role not in modules:  # every bundle names all four roles; the rest run zero-shot
                modules[role] = bundle_mod.base_module_entry(note="not exported: zero-shot base model")
                self.notes.append(f"{role}: no adapter, runs zero-shot on the base model")
        return modules

    def _manifest(self, modules: dict[str, dict]) -> dict:
        top = {"llama_cpp_version": self.converter.version, "default_quant": self._default_quant()}
        if not self._registry_base():
            top["base_model"] = self.base_name
        return bundle_mod.new_manifest(modules, base=self._manifest_base(), **top)

    def _registry_base(self) -> bool:
        from tmd_local.core.registry import EMBEDDED

        return self.base_name in EMBEDDED

    def _manifest_base(self) -> str:
        """The manifest's `base`: a registry name, else the bundle's own base GGUF."""
        if self._registry_base():
            return self.base_name
        return f"base.{self._default_quant()}.gguf"

    def _default_quant(self) -> str:
        return preferred(self.quants) or self.quants[0]

    # -- the folder around the run --
    def _clean_partials(self) -> None:
        for p in list(self.out.glob(".*.partial")) + list(self.out.glob("merged/*.partial")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def _finish(self) -> None:
        shutil.rmtree(self.work / "work", ignore_errors=True)
        (self.work / "previous-manifest.json").unlink(missing_ok=True)
        if not self.o.keep_merged:
            shutil.rmtree(self.out / "merged", ignore_errors=True)


def export(options: ExportOptions, reporter: Reporter | None = None, **kwargs) -> ExportResult:
    return Exporter(options, reporter, **kwargs).run()
