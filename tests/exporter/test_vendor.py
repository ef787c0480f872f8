"""Fetching the llama-cpp-python sdist once and extracting llama.cpp's converters from it."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from exporter import vendor
from tmd_local.core.errors import TmdError

VERSION = "9.9.9"


def fake_sdist(folder: Path, version: str = VERSION, with_gguf_py: bool = True) -> Path:
    """A tarball laid out like the real sdist: only the members the extractor looks at, plus noise."""
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    members = {"convert_hf_to_gguf.py": "print('hf')\n", "convert_lora_to_gguf.py": "print('lora')\n",
               "conversion/__init__.py": "", "LICENSE": "MIT\n",
               "requirements/requirements-convert_hf_to_gguf.txt": "torch\n",
               "requirements/requirements-server-bench.txt": "x\n", "src/llama.cpp": "// not wanted\n",
               "README.md": "not wanted\n"}
    if with_gguf_py:
        members["gguf-py/gguf/__init__.py"] = "__version__ = 'fake'\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / vendor.sdist_filename(version)
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in {**members, "../../evil.py": "x"}.items():
            data = text.encode()
            info = tarfile.TarInfo(prefix + rel if not rel.startswith("..") else rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_fetches_once_and_extracts_only_the_converters(tmp_path):
    source = fake_sdist(tmp_path / "src")
    calls = []

    def fetch(version, dest):
        calls.append(version)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / source.name
        target.write_bytes(source.read_bytes())
        return target

    conv = vendor.ensure_converter(VERSION, cache=tmp_path / "cache", fetch=fetch)
    root = tmp_path / "cache" / f"llama-cpp-python-{VERSION}"
    assert conv.root == root and calls == [VERSION]
    assert conv.hf_script.read_text() == "print('hf')\n" and conv.lora_script.is_file()
    assert (conv.gguf_py / "gguf" / "__init__.py").is_file() and (root / "conversion").is_dir()
    assert (root / "requirements" / "requirements-convert_hf_to_gguf.txt").is_file()
    assert not (root / "requirements" / "requirements-server-bench.txt").exists()
    assert not (root / "src").exists() and not (root / "README.md").exists()
    assert not (tmp_path / "evil.py").exists()
    marker = json.loads((root / vendor.MARKER).read_text())
    assert marker["version"] == VERSION
    assert marker["sdist_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (root / "sdist" / source.name).is_file()  # kept: re-extraction needs no network
    assert not list(root.parent.glob("*.partial"))
    # Second call: nothing fetched. A removed marker re-extracts from the kept tarball, offline.
    vendor.ensure_converter(VERSION, cache=tmp_path / "cache", fetch=fetch)
    (root / vendor.MARKER).unlink()
    vendor.ensure_converter(VERSION, cache=tmp_path / "cache", fetch=fetch)
    assert calls == [VERSION] and (root / vendor.MARKER).is_file()


def test_local_sdist_from_the_environment(tmp_path, monkeypatch):
    source = fake_sdist(tmp_path / "src")
    monkeypatch.setenv(vendor.SDIST_ENV, str(source))
    conv = vendor.ensure_converter(VERSION, cache=tmp_path / "cache", fetch=lambda *a: pytest.fail("fetched"))
    assert conv.hf_script.is_file()
    monkeypatch.setenv(vendor.SDIST_ENV, str(tmp_path / "nope.tar.gz"))
    with pytest.raises(TmdError, match="no such file"):
        vendor.ensure_converter("1.0.0", cache=tmp_path / "cache2")
    other = fake_sdist(tmp_path / "other", version="1.0.1")
    monkeypatch.setenv(vendor.SDIST_ENV, str(other))
    with pytest.raises(TmdError, match="expected llama_cpp_python-1.0.0.tar.gz"):
        vendor.ensure_converter("1.0.0", cache=tmp_path / "cache2")


def test_damaged_or_incomplete_sdist_leaves_no_extraction(tmp_path, monkeypatch):
    bad = tmp_path / "src" / vendor.sdist_filename(VERSION)
    bad.parent.mkdir()
    bad.write_bytes(b"not a tarball")
    monkeypatch.setenv(vendor.SDIST_ENV, str(bad))
    with pytest.raises(TmdError, match="not a readable sdist"):
        vendor.ensure_converter(VERSION, cache=tmp_path / "cache")
    monkeypatch.setenv(vendor.SDIST_ENV, str(fake_sdist(tmp_path / "src2", with_gguf_py=False)))
    with pytest.raises(TmdError, match="gguf-py"):
        vendor.ensure_converter(VERSION, cache=tmp_path / "cache")
    cache = tmp_path / "cache"
    assert not (cache / f"llama-cpp-python-{VERSION}").exists()
    assert not list(cache.glob(".*partial"))


def test_download_is_checked_against_pypi_sha256(tmp_path, monkeypatch):
    payload = b"sdist bytes"

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(vendor.urllib.request, "urlopen", lambda *a, **k: Response(payload))
    target = tmp_path / "x.tar.gz"
    with pytest.raises(TmdError, match="sha256"):
        vendor._download("https://example.invalid/x.tar.gz", target, "0" * 64)
    assert not target.exists() and not list(tmp_path.iterdir())
    vendor._download("https://example.invalid/x.tar.gz", target, hashlib.sha256(payload).hexdigest())
    assert target.read_bytes() == payload


def test_real_converter_matches_installed_version(converter, tmp_path):
    assert converter.version == vendor.installed_version()
    assert converter.hf_script.is_file() and converter.lora_script.is_file()
    assert (converter.gguf_py / "gguf" / "gguf_writer.py").is_file()
    assert str(converter.gguf_py) in converter.env()["PYTHONPATH"].split(":")
    # A failing conversion is one line naming the log.
    (tmp_path / "empty").mkdir()
    with pytest.raises(TmdError, match=r"convert_hf_to_gguf.py failed .*full log"):
        converter.run(converter.hf_script, [str(tmp_path / "empty"), "--outfile", str(tmp_path / "x.gguf")],
                      tmp_path / "log.txt")
    assert not (tmp_path / "x.gguf").exists()
