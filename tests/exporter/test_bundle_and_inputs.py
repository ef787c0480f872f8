"""Pure-Python parts: manifests (write, read, compose), quant names, adapter checks. No torch here."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import bundle as B
from exporter.adapters import check_adapter_mode, check_against_base, discover
from tmd_local.core.errors import TmdError
from tmd_local.core.formats import BUNDLE_FORMAT
from tmd_local.core.quants import parse_quant_list

from exporter_helpers import write_fake_adapter, write_fake_base


def fake_file(folder: Path, name: str, content: bytes) -> dict:
    (folder / name).write_bytes(content)
    return B.file_entry(folder, name, bits_per_weight=8.5)


def make_bundle(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    analyzer = {q: fake_file(folder, f"analyzer.{q}.gguf", b"GGUF" + q.encode()) for q in ("f16", "q8_0")}
    base = {q: fake_file(folder, f"base.{q}.gguf", b"GGUFbase" + q.encode()) for q in ("f16", "q8_0")}
    lora = fake_file(folder, "informant.lora.gguf", b"GGUFlora")
    modules = {
        "analyzer": {"mode": "merged", "files": analyzer, "teacher": "gold", "data": "d", "prompt_version": "v"},
        "informant": {"mode": "adapter", "files": base, "adapter": lora, "teacher": "gold", "data": "d",
                      "prompt_version": "v"},
        "reasoner": B.base_module_entry(files=base),
        "drd": B.base_module_entry(),
    }
    manifest = B.new_manifest(modules, base="smollm2-135m-instruct", default_quant="q8_0")
    B.write_manifest(folder, manifest)
    return manifest


def test_manifest_round_trip_through_the_apps_reader(tmp_path, embedded_model):
    manifest = make_bundle(tmp_path / "b")
    assert manifest["format"] == BUNDLE_FORMAT and manifest["teacher"] == "gold"
    assert list(manifest["modules"]) == ["analyzer", "informant", "reasoner", "drd"]
    bundle = B.read_manifest(tmp_path / "b", check="sha256")
    assert bundle.manifest == manifest
    assert {r: bundle.roles[r].mode for r in bundle.roles} == {
        "analyzer": "merged", "informant": "adapter", "reasoner": "base", "drd": "base"}
    folder = (tmp_path / "b").resolve()
    q8 = bundle.module_set()  # the manifest's default_quant
    assert (q8.analyzer.path, q8.analyzer.quant, q8.analyzer.adapter) == (folder / "analyzer.q8_0.gguf", "q8_0", None)
    f16 = bundle.module_set("f16")
    assert f16.informant.path == folder / "base.f16.gguf" and f16.informant.adapter == folder / "informant.lora.gguf"
    assert q8.reasoner.path == folder / "base.q8_0.gguf"
    assert q8.drd.path == embedded_model.path  # no files: the manifest's base, a registry name
    with pytest.raises(TmdError, match="no 'q4_k_m' files"):
        bundle.module_set("q4_k_m")


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.update(format="other/1"), "format"),
    (lambda m: m["modules"].pop("drd"), "modules.drd': missing"),
    (lambda m: m["modules"]["analyzer"].update(mode="fused"), "mode"),
    (lambda m: m["modules"]["analyzer"]["files"]["f16"].update(file="../x.gguf"), "inside the bundle"),
    (lambda m: m["modules"]["analyzer"]["files"]["f16"].update(sha256="abc"), "64 hex"),
    (lambda m: m["modules"]["informant"].pop("adapter"), "mode 'adapter' needs"),
    (lambda m: m["modules"]["analyzer"]["files"]["f16"].update(size=1), "the manifest says"),
    (lambda m: m["modules"]["analyzer"]["files"]["f16"].update(file="gone.gguf"), "missing"),
    (lambda m: m.update(base="base.q4_0.gguf"), "base base.q4_0.gguf is missing"),
])
def test_bad_manifests_are_one_line_errors(tmp_path, mutate, message):
    manifest = make_bundle(tmp_path / "b")
    mutate(manifest)
    (tmp_path / "b" / B.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TmdError, match=message) as e:
        B.read_manifest(tmp_path / "b")
    assert "\n" not in str(e.value)


def test_sha256_check_and_missing_manifest(tmp_path):
    make_bundle(tmp_path / "b")
    (tmp_path / "b" / "analyzer.f16.gguf").write_bytes(b"GGUFxxx")  # same size, other content
    B.read_manifest(tmp_path / "b", check="size")
    with pytest.raises(TmdError, match="sha256 mismatch"):
        B.read_manifest(tmp_path / "b", check="sha256")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "a.gguf").write_bytes(b"GGUF")
    with pytest.raises(TmdError, match="did not finish"):
        B.read_manifest(tmp_path / "half")


def test_mixing_roles_is_just_a_manifest(tmp_path):
    make_bundle(tmp_path / "a")
    B.set_roles(tmp_path / "a", {"analyzer": B.base_module_entry()})
    assert B.read_manifest(tmp_path / "a").roles["analyzer"].files == {}  # runs on the manifest's base
    make_bundle(tmp_path / "src")
    entry = B.import_role(tmp_path / "a", tmp_path / "src", "informant")
    B.set_roles(tmp_path / "a", {"reasoner": entry})
    reasoner = B.read_manifest(tmp_path / "a", check="sha256").roles["reasoner"]
    assert reasoner.adapter.path == tmp_path / "a" / "informant.lora.gguf"
    with pytest.raises(TmdError, match="no files of its own"):
        B.import_role(tmp_path / "a", tmp_path / "src", "drd")


def test_reader_imports_no_heavy_libraries():
    code = ("import sys, exporter.bundle; heavy = [m for m in ('torch', 'gguf', 'llama_cpp', "
            "'transformers', 'numpy') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_parse_quant_list():
    assert parse_quant_list("q4_k_m, F16,q8_0,q4_k_m") == ["f16", "q4_k_m", "q8_0"]
    assert parse_quant_list(["q5_k_m"]) == ["q5_k_m"]
    with pytest.raises(TmdError, match="unsupported quant type"):
        parse_quant_list("f16,q4_k_xl")
    with pytest.raises(TmdError, match="at least one"):
        parse_quant_list(" , ")


def test_adapter_discovery_errors(tmp_path):
    with pytest.raises(TmdError, match="no such folder"):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TmdError, match="no adapter folders"):
        discover(tmp_path / "empty")
    write_fake_adapter(tmp_path / "run" / "analyzer", tmd=False)
    (tmp_path / "run" / "analyzer" / "checkpoints").mkdir()
    with pytest.raises(TmdError, match="training did not finish.*checkpoints"):
        discover(tmp_path / "run")
    write_fake_adapter(tmp_path / "run2" / "analyzer", module="reasoner")
    with pytest.raises(TmdError, match="says module 'reasoner'"):
        discover(tmp_path / "run2")
    write_fake_adapter(tmp_path / "run3" / "drd", module="drd")
    with pytest.raises(TmdError, match="no analyzer/ adapter folder"):
        discover(tmp_path / "run3", ["analyzer"])
    found = discover(tmp_path / "run3")
    assert [a.module for a in found] == ["drd"] and found[0].rank == 4
    assert [a.module for a in discover(tmp_path / "run3" / "drd")] == ["drd"]  # one module's folder


def test_adapter_must_fit_the_base(tmp_path):
    base = write_fake_base(tmp_path / "tiny-llama")
    ok = discover(write_fake_adapter(tmp_path / "ok" / "analyzer").parent)[0]
    check_against_base(ok, "tiny-llama", base)
    named = discover(write_fake_adapter(tmp_path / "n" / "analyzer", base="HuggingFaceTB/SmolLM2-360M").parent)[0]
    with pytest.raises(TmdError, match="trained on base 'HuggingFaceTB/SmolLM2-360M', not 'tiny-llama'"):
        check_against_base(named, "tiny-llama", base)
    wide = discover(write_fake_adapter(tmp_path / "w" / "analyzer", hidden=128, kv=64).parent)[0]
    with pytest.raises(TmdError, match="trained on another base"):
        check_against_base(wide, "tiny-llama", base)
    deep = discover(write_fake_adapter(tmp_path / "d" / "analyzer", layers=3).parent)[0]
    with pytest.raises(TmdError, match="layer 2 but base"):
        check_against_base(deep, "tiny-llama", base)


def test_adapter_mode_refuses_what_llama_cpp_would_misread(tmp_path):
    dora = discover(write_fake_adapter(tmp_path / "a" / "analyzer", use_dora=True,
                                       modules_to_save=["lm_head"]).parent)[0]
    with pytest.raises(TmdError, match="DoRA.*fully trained modules.*--mode merged"):
        check_adapter_mode(dora)
    check_adapter_mode(discover(write_fake_adapter(tmp_path / "b" / "analyzer").parent)[0])


def test_file_entry_hashes(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"abc")
    e = B.file_entry(tmp_path, "x.gguf", bits_per_weight=1.0)
    assert e == {"file": "x.gguf", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest(),
                 "bits_per_weight": 1.0}
