"""Bundles: which GGUF plays each role, read from `models/<bundle>/manifest.json` (docs/FORMATS.md §5).

The app and the CLI read only the manifest. Per role, `mode` says what the files are:
- `merged`: `files[quant]` is the fine-tuned module itself;
- `adapter`: the base GGUF plus the LoRA GGUF in `adapter.file`; the base is `files[quant]` when
  the role lists files, else the bundle's `base`;
- `base`: the base model, zero-shot; `files[quant]` when listed, else the bundle's `base` (a
  registry name such as `smollm2-135m-instruct`, or a GGUF path relative to the bundle).
A merged role may also list `adapter` with `base_files`: the same module as base + LoRA. With
`prefer_adapter=True` (quant written `q8_0+lora` in the app and CLI) those roles run in that form,
so they share one resident base and switch by swapping adapters instead of reloading.
The default quant is the manifest's `default_quant`, else the first of quants.PREFERENCE present.
A model alone is a bundle too (`zero_shot_bundle`): every role is that model, in its own quant.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..core.errors import TmdError
from ..core.formats import BUNDLE_FORMAT, Manifest
from ..core.gguf_file import read_gguf_header
from ..core.jsonl import read_json, require_regular_file
from ..core.quants import FILE_TYPES, PREFERENCE, canonical, precision_rank
from ..core.registry import ModelRef, resolve_model
from ..core.roles import ROLES
from .generation import ModuleRef
from .pipeline import ModuleSet

FORMAT = BUNDLE_FORMAT
MANIFEST = "manifest.json"
MODES = ("merged", "adapter", "base")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class FileEntry:
    path: Path
    sha256: str | None
    size: int | None
    where: str  # "<manifest>: modules.analyzer.files.q8_0", for messages
    bits_per_weight: float | None = None


@dataclass(frozen=True)
class Role:
    name: str
    mode: str
    files: dict[str, FileEntry] = field(default_factory=dict)  # quant -> file
    adapter: FileEntry | None = None
    # A merged role may also ship as base + LoRA (`adapter.base_files`): the same module in a form
    # whose roles share one resident base and switch by swapping adapters (prefer_adapter=True).
    adapter_base_files: dict[str, FileEntry] = field(default_factory=dict)
    # The token the adapter ends its turn with when it is not the base's EOS (`adapter.eos_token_id`):
    # the base is then loaded with that EOS, or generation would run past the module's answer.
    eos_token_id: int | None = None

    def files_for(self, prefer_adapter: bool) -> dict[str, FileEntry]:
        return self.adapter_base_files if prefer_adapter and self.adapter_base_files else self.files

    def uses_adapter(self, prefer_adapter: bool) -> bool:
        return self.mode == "adapter" or bool(prefer_adapter and self.adapter_base_files)


@dataclass
class Bundle:
    name: str
    roles: dict[str, Role]
    base: str
    manifest_path: Path | None = None  # None for a zero-shot bundle built from a model
    info: dict = field(default_factory=dict)  # teacher, data, prompt_version, created...
    manifest: dict = field(default_factory=dict)  # the JSON as read, for tools that rewrite it
    # One line each, for whoever loads the bundle to show (a prompt_version other than this tmd's)
    warnings: list[str] = field(default_factory=list)

    @property
    def prompt_version(self) -> str | None:
        """The prompt version its modules were trained with (results are labelled with it)."""
        return self.info.get("prompt_version") if self.manifest_path is not None else None

    @property
    def quants(self) -> list[str]:
        return self.quants_for()

    def quants_for(self, prefer_adapter: bool = False) -> list[str]:
        """Quantizations every role can be run in (roles on the registry base accept any)."""
        listed = [r.files_for(prefer_adapter) for r in self.roles.values() if r.files_for(prefer_adapter)]
        if not listed:
            return [self._base_ref().quant or "base"]
        common = set.intersection(*(set(files) for files in listed))
        order = [q for files in listed for q in files]  # manifest order
        return sorted(common, key=order.index)

    @property
    def default_quant(self) -> str:
        quants = self.quants
        preferred = (self.info.get("default_quant"), *PREFERENCE)
        return next((q for q in preferred if q in quants), quants[0])

    def module_set(self, quant: "str | QuantChoice | None" = None, prefer_adapter: bool = False) -> ModuleSet:
        """The four roles' modules in `quant`: 'q8_0', 'q8_0+lora' (merged roles that also ship as
        base + LoRA run in that form) or a per-role mix 'f16,reasoner=q4_k_m'. Default: the
        manifest's default_quant, else q8_0..."""
        choice = quant if isinstance(quant, QuantChoice) else QuantChoice.parse(quant)
        prefer_adapter = prefer_adapter or choice.prefer_adapter
        quants = self.quants_for(prefer_adapter)
        default = choice.default or (self.default_quant if self.default_quant in quants else quants[0])
        if not choice.per_role and default not in quants:
            raise TmdError(f"{self.where}: no '{default}' files for every role; available: "
                           f"{', '.join(quants) or 'none'}")
        if choice.per_role and self.manifest_path is None:
            overrides = ",".join(f"{role}={q}" for role, q in choice.per_role.items())
            raise TmdError(f"--quant: per-module quants ({overrides}) need --bundle; {self.name} alone "
                           f"has only its own quantization ({', '.join(quants)})")
        refs = {}
        for name in ROLES:
            wanted = choice.per_role.get(name, default)
            files = self.roles[name].files_for(prefer_adapter)
            if name in choice.per_role and not files:
                raise TmdError(f"{self.where}: {name} runs on the bundle's base ({self.base}), which has "
                               f"no per-module quants; drop {name}={wanted} from --quant")
            if files and wanted not in files:
                if name in choice.per_role:
                    raise TmdError(f"{self.where}: no '{wanted}' file for {name}; available: {', '.join(files)}")
                raise TmdError(f"{self.where}: no '{wanted}' files for every role; available: "
                               f"{', '.join(quants) or 'none'}")
            refs[name] = self._role_ref(self.roles[name], wanted, prefer_adapter)
        form = ", base + adapters" if prefer_adapter else ""
        return ModuleSet(**refs, label=f"{self.name} ({choice.with_default(default).removesuffix(LORA_SUFFIX)}{form})")

    @property
    def where(self) -> str:
        return str(self.manifest_path) if self.manifest_path else f"model {self.name}"

    @property
    def has_adapter_forms(self) -> bool:
        return any(r.adapter_base_files for r in self.roles.values())

    def choices(self) -> list[str]:
        """Every runnable quant, plus 'q+lora' where merged roles also ship as base + LoRA."""
        plain = self.quants
        lora = [q + LORA_SUFFIX for q in self.quants_for(True)] if self.has_adapter_forms else []
        return plain + lora

    def describe(self) -> str:
        modes = ", ".join(f"{r}: {self.roles[r].mode}" for r in ROLES)
        return f"{self.name} [{', '.join(self.quants)}] {modes}"

    def _role_ref(self, role: Role, quant: str, prefer_adapter: bool = False) -> ModelRef:
        entry = role.files_for(prefer_adapter).get(quant)
        if entry is None:
            base = self._base_ref()
        else:
            check_entry(entry)
            base = ModuleRef(entry.path.resolve(), f"{self.name}/{role.name}", quant=quant, size=entry.size,
                             sha256_expected=entry.sha256, source=entry.where)
        if not role.uses_adapter(prefer_adapter):
            return base
        check_entry(role.adapter)
        return ModuleRef(base.path, f"{self.name}/{role.name}", adapter=role.adapter.path.resolve(),
                         quant=getattr(base, "quant", None), size=getattr(base, "size", None),
                         sha256_expected=getattr(base, "sha256_expected", None),
                         adapter_sha256_expected=role.adapter.sha256, source=role.adapter.where,
                         eos_token_id=role.eos_token_id)

    def _base_ref(self) -> ModelRef:
        """The bundle's base model: a registry name, or a GGUF file inside the bundle folder, held
        to the same rules as `files` entries: a plain name, and a sha256 to check before loading
        (the entry listing the same file, or the manifest's `base_sha256`)."""
        from ..core.registry import EMBEDDED

        if self.manifest_path is None or self.base in EMBEDDED:
            ref = resolve_model(self.base)
            quant = FILE_TYPES.get(int(read_gguf_header(ref.path).get("general.file_type", -1)))
            # A shipped bundle of adapters names the exact base GGUF they were trained on.
            sha = self.manifest.get("base_sha256") if self.manifest_path is not None else None
            if sha is not None:
                if not isinstance(sha, str) or not _SHA256.match(sha):
                    raise TmdError(f"{self.manifest_path}: field 'base_sha256': expected 64 hex characters, got {sha!r}")
                check_entry(FileEntry(ref.path, sha.lower(), None, f"{self.manifest_path}: base {self.base}"))
            return ModuleRef(ref.path, ref.name, quant=quant,
                             sha256_expected=sha.lower() if sha else None)
        path = self.manifest_path.parent / self.base
        entry = self._entry_for(path)
        where = f"{self.manifest_path}: base"
        sha = entry.sha256 if entry else self.manifest.get("base_sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise TmdError(f"{where} {self.base!r}: no sha256 for it (list it under a role's files, or "
                           "give base_sha256), so it cannot be checked before loading")
        check_entry(FileEntry(path, sha, entry.size if entry else None, where))
        ref = resolve_model(path)
        quant = FILE_TYPES.get(int(read_gguf_header(ref.path).get("general.file_type", -1)))
        return ModuleRef(ref.path, ref.name, quant=quant, size=entry.size if entry else None,
                         sha256_expected=sha.lower(), source=where)

    def _entry_for(self, path: Path) -> FileEntry | None:
        """The manifest's entry for this file, if a role lists it."""
        for role in self.roles.values():
            for entry in [*role.files.values(), *role.adapter_base_files.values()]:
                if entry.path == path:
                    return entry
        return None


LORA_SUFFIX = "+lora"


@dataclass(frozen=True)
class QuantChoice:
    """What `--quant` says: one quant for every role ('q8_0'), optionally '+lora', and per-role
    overrides ('f16,reasoner=q4_k_m'), which is how one module at a time is quantized."""
    default: str | None = None
    per_role: dict[str, str] = field(default_factory=dict)
    prefer_adapter: bool = False

    @classmethod
    def parse(cls, text: str | None) -> "QuantChoice":
        if not text or not text.strip():
            return cls()
        default, per_role, prefer_adapter = None, {}, False
        for part in text.strip().lower().split(","):
            part = part.strip()
            if part.endswith(LORA_SUFFIX):
                part, prefer_adapter = part[:-len(LORA_SUFFIX)], True
            role, sep, quant = part.rpartition("=")
            if not sep:
                if default or not part:
                    raise TmdError(f"--quant {text!r}: expected one quant and role=quant overrides, "
                                   "e.g. 'f16,reasoner=q4_k_m'")
                default = canonical(part)
            elif role not in ROLES or not quant:
                raise TmdError(f"--quant {text!r}: {part!r} should be role=quant with role one of {', '.join(ROLES)}")
            else:
                per_role[role] = canonical(quant)
        return cls(default, per_role, prefer_adapter)

    @classmethod
    def of(cls, per_role: dict[str, str]) -> "QuantChoice":
        """The choice that runs these roles in these quants, its default being the most common quant
        (on a tie the more precise one, so one quantized module reads 'f16,analyzer=q4_k_m')."""
        counts = Counter(per_role.values())
        default = max(counts, key=lambda q: (counts[q], -precision_rank(q)))
        return cls(default, {role: q for role, q in per_role.items() if q != default})

    @property
    def text(self) -> str:
        return self.with_default(self.default)

    def with_default(self, default: str) -> str:
        """Canonical text, runnable again as --quant: 'f16,reasoner=q4_k_m'."""
        overrides = [f"{role}={q}" for role, q in sorted(self.per_role.items()) if q != default]
        return ",".join([default, *overrides]) + (LORA_SUFFIX if self.prefer_adapter else "")


def check_entry(entry: FileEntry) -> None:
    """Cheap checks at selection time (existence, a regular file, size); sha256 is checked before
    the first load. A FIFO or a link to a device is refused here: hashing it would never end."""
    try:
        size = entry.path.stat().st_size
    except OSError:
        raise TmdError(f"{entry.where}: file {entry.path} is missing") from None
    try:
        require_regular_file(entry.path, "GGUF file")
    except TmdError as e:
        raise TmdError(f"{entry.where}: {e}") from None
    if entry.size is not None and size != entry.size:
        word = "truncated" if size < entry.size else "larger than the manifest says"
        raise TmdError(f"{entry.where}: file {entry.path} is {word} ({size} bytes, expected {entry.size})")


# --- reading ---------------------------------------------------------------------------------

def load_bundle(path: str | Path) -> Bundle:
    """A bundle folder or its manifest.json -> Bundle, validating every field it relies on."""
    path = Path(path).expanduser()
    manifest_path = path / MANIFEST if path.is_dir() else path
    if not manifest_path.exists():
        raise TmdError(f"{manifest_path}: no bundle manifest here (expected models/<bundle>/{MANIFEST})")
    return parse_manifest(read_json(manifest_path, "bundle manifest"), manifest_path)


def parse_manifest(data, manifest_path: Path) -> Bundle:
    where = str(manifest_path)
    manifest = Manifest.from_json(data, where)
    from ..core.registry import EMBEDDED

    if manifest.base not in EMBEDDED:
        _check_name(manifest.base, f"{where}: field 'base")
    roles = {}
    for role in ROLES:
        if role not in manifest.modules:
            raise TmdError(f"{where}: field 'modules.{role}': missing (a bundle names all of "
                           f"{', '.join(ROLES)}; use mode 'base' for a zero-shot role)")
        roles[role] = parse_role(role, manifest.modules[role], manifest_path)
    info = {k: data[k] for k in ("tmd_version", "created", "teacher", "data", "prompt_version",
                                 "default_quant") if k in data}
    warning = manifest.prompt_version_warning(where)
    return Bundle(manifest_path.parent.name, roles, manifest.base, manifest_path.resolve(), info, data,
                  [warning] if warning else [])


def parse_role(role: str, spec, manifest_path: Path) -> Role:
    """One role's entry; its files are named relative to manifest_path's folder."""
    at = f"{manifest_path}: field 'modules.{role}"
    if not isinstance(spec, dict):
        raise TmdError(f"{at}': expected an object, got {type(spec).__name__}")
    mode = spec.get("mode")
    if mode not in MODES:
        raise TmdError(f"{at}.mode': expected one of {', '.join(MODES)}, got {mode!r}")
    files_spec = spec.get("files", {})
    if not isinstance(files_spec, dict):
        raise TmdError(f"{at}.files': expected an object quant -> file entry")
    if mode == "merged" and not files_spec:
        raise TmdError(f"{at}.files': mode 'merged' needs at least one quantized file")
    files = {quant.lower(): _parse_file(entry, manifest_path, f"{at}.files.{quant}")
             for quant, entry in files_spec.items()}
    if mode == "adapter" and "adapter" not in spec:
        raise TmdError(f"{at}.adapter': mode 'adapter' needs {{\"file\", \"sha256\"}}")
    adapter, base_files = None, {}
    if spec.get("adapter") is not None:
        adapter = _parse_file(spec["adapter"], manifest_path, f"{at}.adapter")
        alt = spec["adapter"].get("base_files") or {}
        if not isinstance(alt, dict):
            raise TmdError(f"{at}.adapter.base_files': expected an object quant -> file entry")
        base_files = {quant.lower(): _parse_file(entry, manifest_path, f"{at}.adapter.base_files.{quant}")
                      for quant, entry in alt.items()}
    eos = (spec.get("adapter") or {}).get("eos_token_id")
    if eos is not None and (not isinstance(eos, int) or isinstance(eos, bool) or eos < 0):
        raise TmdError(f"{at}.adapter.eos_token_id': expected a token id (a whole number >= 0), got {eos!r}")
    return Role(role, mode, files, adapter, base_files, eos)


def _parse_file(entry, manifest_path: Path, at: str) -> FileEntry:
    where = at.replace(": field '", ": ")
    if not isinstance(entry, dict):
        raise TmdError(f"{at}': expected an object with 'file' and 'sha256'")
    name = entry.get("file")
    if not isinstance(name, str) or not name.strip():
        raise TmdError(f"{at}.file': expected a file name, got {name!r}")
    _check_name(name, f"{at}.file")
    sha = entry.get("sha256")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise TmdError(f"{at}.sha256': expected 64 hex characters, got {sha!r}")
    size = entry.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise TmdError(f"{at}.size': expected a byte count, got {size!r}")
    bits = entry.get("bits_per_weight")
    return FileEntry(manifest_path.parent / name, sha.lower(), size or None, where,
                     bits if isinstance(bits, (int, float)) else None)


def _check_name(name: str, at: str) -> None:
    """A file named by the manifest: a plain name inside the bundle folder, never a path out of it
    (absolute, '..'), the folder itself ('.') or a name no file system takes (NUL, control codes)."""
    parts = PurePosixPath(name).parts
    if (PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name or not parts
            or name.strip() in (".", "") or re.search("[\x00-\x1f\x7f]", name)):
        raise TmdError(f"{at}': {name!r} must be a plain name inside the bundle folder")


def zero_shot_bundle(model: str | Path | ModelRef) -> Bundle:
    """Every role played by one model (a registry name or GGUF path): what works without training."""
    ref = model if isinstance(model, ModelRef) else resolve_model(model)
    from ..core.registry import EMBEDDED

    roles = {role: Role(role, "base") for role in ROLES}
    base = ref.name if ref.name in EMBEDDED else str(ref.path)
    return Bundle(ref.name, roles, base, None, {"teacher": "none (zero-shot)"})


def open_source(bundle: str | Path | None = None, model: str | Path | None = None) -> Bundle:
    """What `--bundle`/`--model` name: a bundle folder/manifest, else a model name or GGUF path."""
    if bundle:
        return load_bundle(bundle)
    from ..core.registry import DEFAULT_MODEL

    target = model or DEFAULT_MODEL
    path = Path(str(target)).expanduser()
    if path.is_dir() or path.name == MANIFEST:
        return load_bundle(path)
    return zero_shot_bundle(target)


def find_bundles(root: Path | None = None) -> list[Path]:
    """Bundle folders under models/ (those with a manifest, i.e. finished exports)."""
    from ..core.paths import models_dir

    root = models_dir() if root is None else root
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST}")) if root.is_dir() else []
