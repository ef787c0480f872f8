"""Bundle manifests (docs/FORMATS.md section 5): writing them, and reading them back.

A bundle is a folder of GGUF files and one `manifest.json`, written atomically and last. The
manifest names all four roles (analyzer, informant, reasoner, drd), each with a mode:
- "merged":  `files[quant]` is the role's own merged GGUF;
- "adapter": `files[quant]` is a base-model GGUF (else the manifest's `base`) and `adapter.file` a
             LoRA GGUF that llama.cpp applies at load time;
- "base":    zero-shot - `files[quant]` when listed, else the manifest's `base`, which is a registry
             name (e.g. "smollm2-135m-instruct") or a GGUF path relative to the bundle.
A "merged" role may also carry `adapter` with `base_files`: the same module as base + LoRA, an
alternative the reader uses only when asked (`prefer_adapter=True`).
Reading is the app's own reader (tmd_local/runtime/bundle.py), so what is written is checked by the rules
it is loaded by; this module adds the writer side and what an export promises on top of them: the
base GGUF and every listed file present, with its size and sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from tmd_local import __version__ as TMD_VERSION
from tmd_local.runtime.bundle import MANIFEST, Bundle, FileEntry, Role, load_bundle, parse_manifest, parse_role
from tmd_local.core.errors import TmdError
from tmd_local.core.formats import Manifest
from tmd_local.runtime.integrity import verify_file
from tmd_local.core.jsonl import read_json, write_json_atomic
from tmd_local.core.roles import ROLES
from tmd_local.core.registry import file_sha256

CHECKS = ("none", "size", "sha256")


# --- reading ---------------------------------------------------------------------------------

def read_manifest(path: Path | str, check: str = "size") -> Bundle:
    """Read and validate a bundle (`path` is the folder or its manifest.json) with the app's reader.
    check: "none", "size" (every file exists with the recorded size) or "sha256" (and its hash)."""
    if check not in CHECKS:
        raise ValueError(f"check={check!r}")
    path = Path(path)
    manifest_path = path / MANIFEST if path.is_dir() else path
    if not manifest_path.is_file():
        root = manifest_path.parent
        hint = " (an export into it did not finish; rerun it)" if root.is_dir() and any(root.glob("*.gguf")) else ""
        raise TmdError(f"{root}: not a tmd bundle, no {MANIFEST}{hint}")
    bundle = load_bundle(manifest_path)
    check_contents(bundle, check)
    return bundle


def check_contents(bundle: Bundle, check: str) -> None:
    """The base GGUF (when the manifest names one) and, unless check is "none", every listed file."""
    base = bundle.base
    if base.endswith(".gguf") and not (bundle.manifest_path.parent / base).is_file():
        raise TmdError(f"{bundle.where}: base {base} is missing from the bundle")
    if check != "none":
        check_files(listed_files(bundle.roles.values()), full=check == "sha256")


def listed_files(roles: Iterable[Role]) -> list[FileEntry]:
    """Every file the roles point to, each path once: GGUFs, LoRA adapters and their base files."""
    entries: dict[Path, FileEntry] = {}
    for role in roles:
        adapter = [role.adapter] if role.adapter else []
        for entry in [*role.files.values(), *adapter, *role.adapter_base_files.values()]:
            entries.setdefault(entry.path, entry)
    return list(entries.values())


def check_files(entries: Iterable[FileEntry], full: bool) -> None:
    """Each file present with its recorded size, and with full=True its sha256 (the app's checks)."""
    for entry in entries:
        verify_file(entry.path, entry.size, entry.sha256 if full else None, entry.where)


def role_of(bundle: Bundle, role: str) -> Role:
    """bundle.roles[role], or a one-line error naming the roles there are."""
    if role not in bundle.roles:
        raise TmdError(f"{bundle.where}: no '{role}' module (it has {', '.join(bundle.roles)})")
    return bundle.roles[role]


# --- writing ---------------------------------------------------------------------------------

def file_entry(bundle_dir: Path, name: str, **extra: Any) -> dict:
    """{"file", "size", "sha256", **extra} for a file already in the bundle folder."""
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
    shared = {key: _shared_value(modules, key) for key in ("teacher", "data", "prompt_version")}
    return Manifest(base=base, tmd_version=TMD_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    **shared, extra=top,
                    modules={role: modules[role] for role in ROLES if role in modules}).to_json()


def _shared_value(modules: dict[str, dict], key: str) -> Any:
    """The fine-tuned modules' common value of `key`; "mixed" when they differ (for data, the
    common folder of one teacher run's files), None when no module is fine-tuned."""
    values = {json.dumps(m.get(key)) for m in modules.values() if m.get("mode") != "base"}
    if len(values) == 1:
        return json.loads(values.pop())
    if not values:
        return None
    paths = [json.loads(v) for v in values]
    if key == "data" and all(isinstance(v, str) and "/" in v for v in paths):
        return os.path.commonpath(paths) or "mixed"
    return "mixed"


def write_manifest(bundle_dir: Path, manifest: dict, check: str = "size") -> Path:
    """Validate as read_manifest does (the app's reader, the base and every listed file present
    with its size) and write manifest.json atomically."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    check_contents(parse_manifest(manifest, path), check)
    write_json_atomic(path, manifest)
    os.chmod(path, 0o644)  # the temp file it was renamed from is private
    return path


def set_roles(bundle_dir: Path, entries: dict[str, dict]) -> Path:
    """Replace roles in an existing bundle's manifest, e.g. make the Informant zero-shot:
    set_roles(dir, {"informant": base_module_entry()})."""
    bundle = read_manifest(bundle_dir, check="none")
    manifest = Manifest.from_json(bundle.manifest, str(bundle.manifest_path))
    modules = {**manifest.modules, **entries}
    return write_manifest(bundle_dir, new_manifest(modules, base=manifest.base, **manifest.extra))


def take_down_manifest(bundle_dir: Path, work: Path, rewritten: set[str], notes: list[str]) -> dict[str, dict]:
    """Remove manifest.json before an export changes any file (a copy is kept in `work` until the
    export finishes) and return the entries of the roles it does not rewrite whose files are all
    still there with their sha256, to carry over into the new manifest."""
    current = bundle_dir / MANIFEST
    kept = work / "previous-manifest.json"
    # A damaged manifest (or a damaged copy of one) keeps nothing: its roles are exported again.
    if current.is_file():
        try:
            write_json_atomic(kept, read_json(current, "bundle manifest"))
        except TmdError as e:
            notes.append(f"previous manifest not kept ({e})")
        current.unlink()
    try:
        data = read_json(kept, "previous manifest") if kept.exists() else {}
    except TmdError as e:
        notes.append(f"previous manifest not kept ({e})")
        return {}
    modules = data.get("modules", {}) if isinstance(data, dict) else {}
    if not isinstance(modules, dict):
        return {}
    return {role: entry for role, entry in modules.items()
            if role not in rewritten and role in ROLES and _still_valid(role, entry, current, notes)}


def _still_valid(role: str, entry: Any, manifest_path: Path, notes: list[str]) -> bool:
    """A previous role entry worth keeping: its files all present with their sha256."""
    if isinstance(entry, dict) and entry.get("mode") == "base" and not entry.get("files"):
        return False  # a zero-shot placeholder; written again if still needed
    try:  # checked as the bundle's own manifest: its files are named relative to its folder
        spec = parse_role(role, entry, manifest_path)
        check_files(listed_files([spec]), full=True)
        return True
    except TmdError as e:
        notes.append(f"{role}: dropped from the previous manifest ({e})")
        return False


def import_role(bundle_dir: Path, source_bundle: Path, role: str, as_role: str | None = None) -> dict:
    """Copy (hard-link when possible) one role's files from another bundle into `bundle_dir`;
    returns its manifest entry for `set_roles` / `new_manifest`. File names are kept, so two
    roles bringing different files of the same name cannot be imported into one bundle."""
    src = read_manifest(source_bundle, check="sha256")
    spec = role_of(src, role)
    entry = json.loads(json.dumps(src.manifest["modules"][role]))
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    if not spec.files and spec.mode != "merged":
        raise TmdError(f"{source_bundle}: {role} runs on that bundle's base ({src.base}), "
                       "it has no files of its own to import")
    for f in listed_files([spec]):
        dst = bundle_dir / f.path.name  # manifests name plain files in the bundle folder
        if dst.exists():
            if file_sha256(dst) != f.sha256:
                raise TmdError(f"{dst}: exists with other content; cannot import {role} from {source_bundle}")
            continue
        tmp = dst.with_name(f".{dst.name}.partial")
        try:
            os.link(f.path, tmp)
        except OSError:
            shutil.copyfile(f.path, tmp)
        os.replace(tmp, dst)
    entry["imported_from"] = str(source_bundle) + (f"#{role}" if as_role and as_role != role else "")
    return entry
