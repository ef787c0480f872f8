"""Categories 2, 5, 12 and 13: GGUF headers whose lengths lie, files that are not regular files
(FIFOs, devices, folders, names with NUL), a bundle base outside the bundle or without a sha256,
and per-module quants without a bundle."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from hostile_helpers import finishes_within, invoke, one_line_error
from tmd_local.runtime.bundle import load_bundle, open_source
from tmd_local.core.errors import TmdError
from tmd_local.core.gguf_file import read_gguf_header, read_gguf_info
from tmd_local.runtime.integrity import verify_files
from tmd_local.core.registry import resolve_model

HUGE = [2**62, 2**63 - 1, 2**64 - 1, 2**32, 10**12]


def _s(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def gguf(kvs: list[bytes] = (), tensors: list[bytes] = (), n_kv=None, n_tensors=None) -> bytes:
    """A GGUF v3 header from raw key/value and tensor-info records."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    return head + b"".join(kvs) + b"".join(tensors)


def kv_str(key: bytes, value: bytes) -> bytes:
    return _s(key) + struct.pack("<I", 8) + _s(value)


def kv_u32(key: bytes, value: int) -> bytes:
    return _s(key) + struct.pack("<II", 4, value)


VALID = gguf([kv_str(b"general.architecture", b"llama"), kv_u32(b"general.file_type", 7),
              kv_str(b"tokenizer.chat_template", b"{{ x }}"),
              _s(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + _s(b"a") + _s(b"b")],
             [_s(b"t.weight") + struct.pack("<IQQIQ", 2, 4, 4, 0, 0)]) + b"\0" * 160


def _write(tmp_path: Path, data: bytes, name="m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_valid_header_reads(tmp_path):
    info = read_gguf_info(_write(tmp_path, VALID))
    assert info.architecture == "llama" and info.n_elements == 16 and info.file_type == "q8_0"


@pytest.mark.parametrize("n", HUGE)
@pytest.mark.parametrize("where", ["key", "value", "array", "n_kv", "n_tensors", "tensor_name", "dims"])
def test_lengths_and_counts_past_the_file_are_refused(tmp_path, n, where):
    data = {
        "key": gguf([struct.pack("<Q", n) + b"x"]),
        "value": gguf([_s(b"k") + struct.pack("<IQ", 8, n) + b"x"]),
        "array": gguf([_s(b"k") + struct.pack("<IIQ", 9, 0, n)]),
        "n_kv": gguf([], n_kv=n),
        "n_tensors": gguf([], n_tensors=n),
        "tensor_name": gguf([], [struct.pack("<Q", n) + b"x"]),
        "dims": gguf([], [_s(b"t") + struct.pack("<I", min(n, 2**32 - 1)) + b"\0" * 64]),
    }[where]
    path = _write(tmp_path, data)
    ended, outcome = finishes_within(10, read_gguf_info, path)
    assert ended, "reading the header must not hang or allocate the claimed size"
    assert isinstance(outcome, TmdError) and "truncated or corrupt" in str(outcome), outcome


def test_arrays_nested_without_end(tmp_path):
    nested = _s(b"k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5000 + struct.pack("<IQ", 4, 0)
    with pytest.raises(TmdError, match="nested"):
        read_gguf_header(_write(tmp_path, gguf([nested])))


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4))
def test_mutated_headers_never_crash(tmp_path_factory, edits):
    data = bytearray(VALID)
    for offset, patch in edits:
        data[offset:offset + len(patch)] = patch
    path = _write(tmp_path_factory.mktemp("g"), bytes(data))
    ended, outcome = finishes_within(10, read_gguf_info, path)
    assert ended
    assert not isinstance(outcome, BaseException) or isinstance(outcome, TmdError), repr(outcome)


def test_a_lying_header_through_ask(tmp_path):
    path = _write(tmp_path, gguf([struct.pack("<Q", 2**62) + b"x"]))
    one_line_error(invoke("ask", "Q?", "--option", "A=y", "--option", "B=n", "--model", path), "m.gguf")


# --- files that are not regular files ----------------------------------------------------------

def _fifo(tmp_path: Path, name="pipe.gguf") -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _zero_link(tmp_path: Path, name="zero.gguf") -> Path:
    path = tmp_path / name
    path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize("make", [_fifo, _zero_link])
def test_model_that_is_not_a_regular_file(tmp_path, make):
    path = make(tmp_path)
    ended, result = finishes_within(20, invoke, "ask", "Q?", "--option", "A=y", "--option", "B=n", "--model", path)
    assert ended, "--model on a FIFO or device must not hang"
    one_line_error(result, "not a regular file")
    with pytest.raises(TmdError, match="not a regular file"):
        resolve_model(path)


def _bundle(folder: Path, name: str, base="smollm2-135m-instruct", **top) -> Path:
    folder.mkdir(exist_ok=True)
    entry = {"file": name, "sha256": "0" * 64}
    modules = {role: {"mode": "merged", "files": {"q8_0": entry}} for role in ("analyzer", "informant", "reasoner", "drd")}
    (folder / "manifest.json").write_text(json.dumps({"format": "tmd-bundle/1", "base": base, "modules": modules, **top}))
    return folder


@pytest.mark.parametrize("make", [_fifo, _zero_link])
def test_bundle_entry_that_is_not_a_regular_file(tmp_path, make):
    (tmp_path / "b").mkdir()
    make(tmp_path / "b", "a.gguf")
    folder = _bundle(tmp_path / "b", "a.gguf")
    ended, result = finishes_within(20, invoke, "ask", "Q?", "--option", "A=y", "--option", "B=n", "--bundle", folder)
    assert ended, "a FIFO or /dev/zero in a bundle must not hang (nor be hashed forever)"
    one_line_error(result, "not a regular file")


@pytest.mark.parametrize("name", [".", "./", "a\x00b.gguf", "a\nb.gguf", "../x.gguf", "/etc/passwd", "\\x.gguf", " "])
def test_bundle_entry_names_outside_or_impossible(tmp_path, name):
    folder = _bundle(tmp_path / "b", name)
    with pytest.raises(TmdError, match="plain name inside the bundle folder|expected a file name"):
        load_bundle(folder)
    one_line_error(invoke("ask", "Q?", "--option", "A=y", "--option", "B=n", "--bundle", folder))


@given(st.text(min_size=1, max_size=12))
def test_generated_entry_names_never_crash(tmp_path_factory, name):
    folder = _bundle(tmp_path_factory.mktemp("b") / "b", name)
    try:
        open_source(bundle=folder).module_set()
    except TmdError:
        pass  # refused or missing: either way a TmdError, never another exception


def test_data_results_and_out_that_are_fifos(tmp_path):
    fifo = _fifo(tmp_path, "q.jsonl")
    for args in (["eval", "--dataset", "obqa", "--data-path", fifo, "--out", tmp_path / "r.jsonl"],
                 ["report", fifo, "--out", tmp_path / "rep.md"],
                 ["eval", "--dataset", "obqa", "--out", fifo],
                 ["teach", "--dataset", "obqa", "--teacher", "gold", "--data-path", fifo, "--out", tmp_path / "t"]):
        ended, result = finishes_within(20, invoke, *args)
        assert ended, args
        one_line_error(result, "not a regular file")


# --- category 12: the bundle's base follows the rules of its files ------------------------------

@pytest.mark.parametrize("base", ["../../x.gguf", "/tmp/x.gguf", "..", "sub/../../x.gguf", "a\x00.gguf"])
def test_base_outside_the_bundle_is_refused_like_a_file(tmp_path, base):
    folder = _bundle(tmp_path / "b", "a.gguf", base=base)
    with pytest.raises(TmdError, match="field 'base'.*plain name inside the bundle folder"):
        load_bundle(folder)


def _base_bundle(tmp_path: Path, embedded_model, **top) -> Path:
    folder = tmp_path / "b"
    folder.mkdir(parents=True)
    (folder / "base.q4_1.gguf").symlink_to(embedded_model.path)
    modules = {role: {"mode": "base"} for role in ("analyzer", "informant", "reasoner", "drd")}
    (folder / "manifest.json").write_text(json.dumps({"format": "tmd-bundle/1", "base": "base.q4_1.gguf",
                                                      "modules": modules, **top}))
    return folder


def test_base_file_without_a_sha256_is_refused(tmp_path, embedded_model):
    folder = _base_bundle(tmp_path, embedded_model)
    with pytest.raises(TmdError, match="no sha256 for it"):
        load_bundle(folder).module_set()


def test_base_file_is_checked_against_its_sha256(tmp_path, embedded_model):
    modules = load_bundle(_base_bundle(tmp_path, embedded_model, base_sha256="0" * 64)).module_set()
    with pytest.raises(TmdError, match="sha256 mismatch"):
        verify_files(modules.reasoner)
    good = load_bundle(_base_bundle(tmp_path / "ok", embedded_model, base_sha256=embedded_model.sha256()))
    verify_files(good.module_set().reasoner)  # the same file, its true sha256: accepted


# --- category 13: per-module quants without a bundle --------------------------------------------

@pytest.mark.parametrize("quant", ["f16,reasoner=q3", "analyzer=q8_0", "q4_1,drd=q8_0", "reasoner=q4_1"])
def test_per_module_quant_without_a_bundle_is_refused(quant, embedded_model):
    one_line_error(invoke("ask", "Q?", "--option", "A=y", "--option", "B=n", "--quant", quant), "need --bundle")
    one_line_error(invoke("eval", "--dataset", "obqa", "--quant", quant, "--data-path", "/nonexistent"),
                   "need --bundle")
