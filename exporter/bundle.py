"""Bundle manifests (docs/FORMATS.md section 5): writing them, and reading them for the app.

Pure Python - no torch, no gguf, no llama_cpp - so tmd_local can import the reader at startup.

A bundle is a folder of GGUF files and one `manifest.json`, written atomically and last. The
manifest names all four roles (analyzer, informant, reasoner, drd), each with a mode:
- "merged":  `files[quant]` is the role's own merged GGUF;
- "adapter": `files[quant]` is a base-model GGUF (else the manifest's `base`) and `adapter.file` a
             LoRA GGUF that llama.cpp applies at load time;
- "base":    zero-shot - `files[quant]` when listed, else the manifest's `base`, which is a registry
             name (e.g. "smollm2-135m-instruct") or a GGUF path relative to the bundle.
A "merged" role may also carry `adapter` with `base_files`: the same module as base + LoRA, an
alternative the reader uses only when asked (`prefer_adapter=True`).
These are the rules tmd_local/bundle.py applies; this module adds the writer side.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tmd_local import __version__ as TMD_VERSION
from tmd_local.errors import TmdError
from tmd_local.prompts import ROLES

FORMAT = "tmd-bundle/1"
MANIFEST = "manifest.json"
MODES = ("merged", "adapter", "base")
QUANT_PREFERENCE = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "f16", "bf16", "f32")


# --- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadTarget:
    """What llama.cpp loads for one role: a GGUF path (or a registry model name) and maybe a LoRA."""
    role: str
    mode: str
    quant: str | None
    model: Path | str          # Path inside the bundle, or a registry name (mode "base" without files)
    lora: Path | None = None
    sha256: str | None = None  # of `model`, when it is a bundle file

    @property
    def is_registry_model(self) -> bool:
        return isinstance(self.model, str)


@dataclass
class ModuleEntry:
    role: str
    mode: str
    files: dict[str, dict]
    adapter: dict | None
    model: str | None
    raw: dict

    @property
    def quants(self) -> list[str]:
        return list(self.files)

    def pick_quant(self, prefer: str | None = None, default: str | None = None) -> str | None:
        if not self.files:
            return None
        if prefer:
            if prefer not in self.files:
                raise TmdError(f"{self.role}: the bundle has no {prefer} file (it has "
                               f"{', '.join(self.files)})")
            return prefer
        for q in ((default,) if default else ()) + QUANT_PREFERENCE:
            if q in self.files:
                return q
        return next(iter(self.files))


@dataclass
class Bundle:
    root: Path
    manifest: dict
    modules: dict[str, ModuleEntry] = field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        return list(self.modules)

    def module(self, role: str) -> ModuleEntry:
        if role not in self.modules:
            raise TmdError(f"{self.root / MANIFEST}: no '{role}' module (it has {', '.join(self.modules)})")
        return self.modules[role]

    def target(self, role: str, quant: str | None = None, prefer_adapter: bool = False) -> LoadTarget:
        """What to load for `role`: the GGUF for `quant` (default: the manifest's default_quant,
        else q8_0, else the best there is), plus the LoRA in adapter mode."""
        entry = self.module(role)
        default = self.manifest.get("default_quant")
        if entry.mode == "merged" and prefer_adapter and entry.adapter and entry.adapter.get("base_files"):
            files = entry.adapter["base_files"]
            q = ModuleEntry(role, "adapter", files, entry.adapter, None, {}).pick_quant(quant, default)
            return LoadTarget(role, "adapter", q, self.root / files[q]["file"],
                              self.root / entry.adapter["file"], files[q].get("sha256"))
        lora = self.root / entry.adapter["file"] if entry.mode == "adapter" else None
        if not entry.files:
            return LoadTarget(role, entry.mode, None, self.base_model(), lora)
        q = entry.pick_quant(quant, default)
        f = entry.files[q]
        return LoadTarget(role, entry.mode, q, self.root / f["file"], lora, f.get("sha256"))

    def base_model(self) -> Path | str:
        """The manifest's `base`: a GGUF in the bundle when such a file exists, else a registry name."""
        base = self.manifest["base"]
        candidate = self.root / base
        return candidate if base.endswith(".gguf") and candidate.is_file() else base

    def all_files(self) -> list[dict]:
        """Every file entry the manifest points to (each path once)."""
        seen, out = set(), []
        for entry in self.modules.values():
            candidates = list(entry.files.values())
            if entry.adapter:
                candidates.append(entry.adapter)
                candidates.extend(entry.adapter.get("base_files", {}).values())
            for f in candidates:
                if f["file"] not in seen:
                    seen.add(f["file"])
                    out.append(f)
        return out


def read_manifest(path: Path | str, check: str = "size") -> Bundle:
    """Read and validate a bundle. `path` is the folder or its manifest.json.
    check: "none", "size" (every file exists with the recorded size) or "sha256" (and its hash)."""
    path = Path(path)
    manifest_path = path / MANIFEST if path.is_dir() else path
    root = manifest_path.parent
    if not manifest_path.is_file():
        hint = " (an export into it did not finish; rerun it)" if root.is_dir() and any(root.glob("*.gguf")) else ""
        raise TmdError(f"{root}: not a tmd bundle, no {MANIFEST}{hint}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TmdError(f"{manifest_path}: not readable JSON ({e})") from None
    bundle = Bundle(root, manifest, _parse_modules(manifest, manifest_path))
    if isinstance(manifest.get("base"), str) and manifest["base"].endswith(".gguf") and \
            not (root / manifest["base"]).is_file():
        raise TmdError(f"{manifest_path}: base {manifest['base']} is missing from the bundle")
    if check not in ("none", "size", "sha256"):
        raise ValueError(f"check={check!r}")
    if check != "none":
        for f in bundle.all_files():
            _check_file(root, f, manifest_path, check == "sha256")
    return bundle


def _parse_modules(manifest: Any, where: Path, partial: bool = False) -> dict[str, ModuleEntry]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise TmdError(f"{where}: format {found!r}, expected {FORMAT!r}")
    base = manifest.get("base")
    if not partial and (not isinstance(base, str) or not base.strip()):
        raise TmdError(f"{where}: 'base' must name the base model (registry name or GGUF in the bundle)")
    modules = manifest.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise TmdError(f"{where}: no modules")
    missing = [r for r in ROLES if r not in modules]
    if missing and not partial:
        raise TmdError(f"{where}: modules.{missing[0]} is missing (a bundle names all of "
                       f"{', '.join(ROLES)}; use mode 'base' for a zero-shot role)")
    parsed = {}
    for role, entry in modules.items():
        if role not in ROLES:
            raise TmdError(f"{where}: unknown module '{role}' (expected {', '.join(ROLES)})")
        if not isinstance(entry, dict):
            raise TmdError(f"{where}: modules.{role} is not an object")
        mode = entry.get("mode")
        if mode not in MODES:
            raise TmdError(f"{where}: modules.{role}.mode is {mode!r}, expected one of {', '.join(MODES)}")
        files = entry.get("files") or {}
        if not isinstance(files, dict):
            raise TmdError(f"{where}: modules.{role}.files is not an object")
        for q, f in files.items():
            _check_entry(f, f"modules.{role}.files.{q}", where)
        adapter = entry.get("adapter")
        if adapter is not None:
            _check_entry(adapter, f"modules.{role}.adapter", where)
            for q, f in (adapter.get("base_files") or {}).items():
                _check_entry(f, f"modules.{role}.adapter.base_files.{q}", where)
        if mode == "merged" and not files:
            raise TmdError(f"{where}: modules.{role} (merged) lists no files")
        if mode == "adapter" and adapter is None:
            raise TmdError(f"{where}: modules.{role} is in adapter mode but has no adapter file")
        parsed[role] = ModuleEntry(role, mode, dict(files), adapter, entry.get("model"), entry)
    return parsed


def _check_entry(f: Any, label: str, where: Path) -> None:
    if not isinstance(f, dict) or not isinstance(f.get("file"), str):
        raise TmdError(f"{where}: {label} needs a 'file'")
    sha = f.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha):
        raise TmdError(f"{where}: {label}.sha256 must be 64 hex characters")
    p = PurePosixPath(f["file"])
    if p.is_absolute() or ".." in p.parts or "\\" in f["file"]:
        raise TmdError(f"{where}: {label}.file {f['file']!r} must be a plain name inside the bundle")


def _check_file(root: Path, f: dict, where: Path, full: bool) -> None:
    path = root / f["file"]
    if not path.is_file():
        raise TmdError(f"{where}: lists {f['file']}, which is missing")
    if "size" in f and path.stat().st_size != f["size"]:
        raise TmdError(f"{where}: {f['file']} is {path.stat().st_size} bytes, the manifest says "
                       f"{f['size']} (incomplete or replaced file)")
    if full and f.get("sha256"):
        from tmd_local.registry import file_sha256

        if file_sha256(path) != f["sha256"]:
            raise TmdError(f"{where}: {f['file']} does not match its sha256 in the manifest")


# --- writing ---------------------------------------------------------------------------------

def file_entry(bundle_dir: Path, name: str, **extra: Any) -> dict:
    """{"file", "size", "sha256", **extra} for a file already in the bundle folder."""
    from tmd_local.registry import file_sha256

    path = Path(bundle_dir) / name
    return {"file": name, "size": path.stat().st_size, "sha256": file_sha256(path), **extra}


def base_module_entry(files: dict[str, dict] | None = None, **meta: Any) -> dict:
    """A zero-shot role: base-model GGUFs in the bundle (`files`), or none - then the role runs on
    the manifest's `base` (a registry model such as the embedded smollm2-135m-instruct)."""
    entry: dict[str, Any] = {"mode": "base"}
    if files:
        entry["files"] = files
    entry.update(meta)
    return entry


def new_manifest(modules: dict[str, dict], *, base: str, **top: Any) -> dict:
    """A manifest around `modules`; teacher/data/prompt_version are lifted to the top when the
    fine-tuned modules agree ("mixed" when they do not, null when there are none)."""
    manifest: dict[str, Any] = {"format": FORMAT, "tmd_version": TMD_VERSION,
                                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "base": base}
    for key in ("teacher", "data", "prompt_version"):
        values = {json.dumps(m.get(key)) for m in modules.values() if m.get("mode") != "base"}
        manifest[key] = json.loads(values.pop()) if len(values) == 1 else ("mixed" if values else None)
        if key == "data" and len(values) > 1:  # one teacher run's files: name the run's folder
            paths = [json.loads(v) for v in values]
            if all(isinstance(v, str) and "/" in v for v in paths):
                common = os.path.commonpath(paths)
                manifest[key] = common or "mixed"
    manifest.update(top)
    manifest["modules"] = {role: modules[role] for role in ROLES if role in modules}
    return manifest


def write_manifest(bundle_dir: Path, manifest: dict, check: str = "size") -> Path:
    """Validate (every listed file present with its size) and write manifest.json atomically."""
    from tmd_local.jsonl import write_json_atomic

    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    probe = Bundle(bundle_dir, manifest, _parse_modules(manifest, path))
    base = manifest["base"]
    if base.endswith(".gguf") and not (bundle_dir / base).is_file():
        raise TmdError(f"{path}: base {base} is not in the bundle")
    if check != "none":
        for f in probe.all_files():
            _check_file(bundle_dir, f, path, check == "sha256")
    write_json_atomic(path, manifest)
    os.chmod(path, 0o644)  # the temp file it was renamed from is private
    return path


def set_roles(bundle_dir: Path, entries: dict[str, dict]) -> Path:
    """Replace roles in an existing bundle's manifest, e.g. make the Informant zero-shot:
    set_roles(dir, {"informant": base_module_entry()})."""
    bundle = read_manifest(bundle_dir, check="none")
    modules = dict(bundle.manifest["modules"])
    modules.update(entries)
    top = {k: v for k, v in bundle.manifest.items()
           if k not in ("format", "tmd_version", "created", "base", "teacher", "data",
                        "prompt_version", "modules")}
    return write_manifest(bundle_dir, new_manifest(modules, base=bundle.manifest.get("base"), **top))


def import_role(bundle_dir: Path, source_bundle: Path, role: str, as_role: str | None = None) -> dict:
    """Copy (hard-link when possible) one role's files from another bundle into `bundle_dir`;
    returns its manifest entry for `set_roles` / `new_manifest`. File names are kept, so two
    roles bringing different files of the same name cannot be imported into one bundle."""
    src = read_manifest(source_bundle, check="sha256")
    entry = json.loads(json.dumps(src.module(role).raw))
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    probe = Bundle(src.root, {}, {role: src.module(role)})
    if not src.module(role).files and src.module(role).mode != "merged":
        raise TmdError(f"{source_bundle}: {role} runs on that bundle's base ({src.manifest['base']}), "
                       "it has no files of its own to import")
    for f in probe.all_files():
        dst = bundle_dir / f["file"]
        if dst.exists():
            from tmd_local.registry import file_sha256

            if file_sha256(dst) != f["sha256"]:
                raise TmdError(f"{dst}: exists with other content; cannot import {role} from {source_bundle}")
            continue
        tmp = dst.with_name(f".{dst.name}.partial")
        try:
            os.link(src.root / f["file"], tmp)
        except OSError:
            shutil.copyfile(src.root / f["file"], tmp)
        os.replace(tmp, dst)
    entry["imported_from"] = str(source_bundle) + (f"#{role}" if as_role and as_role != role else "")
    return entry
