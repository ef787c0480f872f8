"""The contracts (tmd_local/core/formats.py, roles.py, quants.py): every record survives from_json ->
to_json as the same JSON text, key order included, and bad input is refused naming place and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tmd_local.core.errors import TmdError
from tmd_local.core.formats import (BUNDLE_FORMAT, AdapterMeta, Manifest, ResultConfig, ResultRecord,
                               TeacherRecord)
from tmd_local.core.prompts import PROMPT_VERSION
from tmd_local.core.roles import ROLES, Role, role_named

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trainer"


def same_text(a: dict, b: dict) -> bool:
    """Equal as written: json.dumps keeps key order, so this compares bytes, not just content."""
    return json.dumps(a, indent=2, ensure_ascii=False) == json.dumps(b, indent=2, ensure_ascii=False)


# --- roles and quants ------------------------------------------------------------------------

def test_roles_are_plain_strings_in_json():
    assert ROLES == ("analyzer", "informant", "reasoner", "drd")
    assert json.dumps({Role.ANALYZER: Role.DRD}) == '{"analyzer": "drd"}'
    assert f"{Role.REASONER}" == "reasoner" and Role("informant") is Role.INFORMANT
    with pytest.raises(TmdError, match=r"--modules critic: unknown module \(expected analyzer, informant"):
        role_named("critic", "--modules")


def test_one_quant_table_for_every_reader():
    import llama_cpp

    from tmd_local.runtime.bundle import QuantChoice
    from tmd_local.core.gguf_file import file_type_name
    from tmd_local.core.quants import QUANTS, canonical, parse_quant_list, precision_rank, preferred

    for quant in QUANTS:  # the codes are llama.cpp's own llama_ftype values
        assert getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.name.upper()}", None) == quant.ftype or \
            quant.name == "f32" and llama_cpp.LLAMA_FTYPE_ALL_F32 == quant.ftype, quant
        assert file_type_name(quant.ftype) == quant.name
    assert file_type_name(99) == "type-99"
    # one spelling rule: the exporter's --quant and the app's --quant agree
    assert canonical(" Q4-K-M ") == "q4_k_m" == parse_quant_list(["q4-k-m"])[0] == parse_quant_list("Q4_K_M")[0]
    assert QuantChoice.parse("F16,reasoner=q4-k-m").text == "f16,reasoner=q4_k_m"
    assert precision_rank("f32") < precision_rank("f16") < precision_rank("q8_0") < precision_rank("q2_k")
    assert precision_rank("iq2_xs") == len(QUANTS)
    assert preferred(["f16", "q4_0"]) == "q4_0" and preferred(["f16", "bf16"]) == "f16"
    assert preferred(["f32"]) == "f32" and preferred([]) is None


# --- teacher records -------------------------------------------------------------------------

@pytest.mark.parametrize("module", ROLES)
def test_teacher_records_round_trip(module):
    for lineno, line in enumerate((FIXTURES / f"{module}.jsonl").read_text().splitlines(), start=1):
        written = json.loads(line)
        record = TeacherRecord.from_json(written, f"{module}.jsonl:{lineno}", module)
        assert json.dumps(record.to_json(), ensure_ascii=False) == json.dumps(written, ensure_ascii=False)
        assert record.group == record.id.split("#")[0]


def test_the_teacher_writes_teacher_records():
    from teacher.traces import Context, Outcome, record

    ctx = Context(teacher="gold:rationale", dataset="strategyqa", split="train")
    rec = record(ctx, "q1#2", "informant", [{"role": "user", "content": "Q?"}], "Facts.")
    assert list(rec) == ["id", "module", "messages", "target", "teacher", "dataset", "split", "prompt_version"]
    assert rec["prompt_version"] == PROMPT_VERSION
    out = Outcome()
    out.add(rec, "empty_reply")
    rejected = TeacherRecord.from_json(out.rejected[0], "rejected.jsonl:1")
    assert rejected.reason == "empty_reply" and rejected.group == "q1"
    assert same_text(rejected.to_json(), out.rejected[0])


def test_teacher_record_errors_name_the_line_and_field():
    good = {"id": "q1", "module": "drd", "messages": [{"role": "user", "content": "x"}], "target": "t",
            "teacher": "gold"}
    with pytest.raises(TmdError, match=r"^drd.jsonl:3: field 'target': expected a non-empty string"):
        TeacherRecord.from_json({**good, "target": " "}, "drd.jsonl:3", "drd")
    with pytest.raises(TmdError, match=r"field 'module' is 'drd', expected 'reasoner'"):
        TeacherRecord.from_json(good, "f:1", "reasoner")
    with pytest.raises(TmdError, match=r"field 'messages\[0\]'"):
        TeacherRecord.from_json({**good, "messages": [{"role": "user"}]}, "f:1", "drd")
    with pytest.raises(TmdError, match=r"^f:1: expected a JSON object, got list"):
        TeacherRecord.from_json([], "f:1", "drd")


# --- tmd.json --------------------------------------------------------------------------------

TRAINED = {"module": "reasoner", "base": "smollm2-135m-instruct", "base_source": "/m/base",
           "teacher": "gold:rationale", "data": "runs/x/teacher/reasoner.jsonl", "data_sha256": "ab" * 32,
           "hyperparameters": {"lr": 1e-4, "lora_r": 16},
           "training": {"questions": 9, "examples": 9, "steps": 6, "epochs": 2.0, "lr": 1e-4},
           "tmd_version": "0.1.0", "prompt_version": PROMPT_VERSION}


def test_tmd_json_round_trips_for_each_writer():
    assert same_text(AdapterMeta.from_json(TRAINED, "tmd.json").to_json(), TRAINED)
    dev = {k: v for k, v in TRAINED.items() if k != "training"}  # exporter/devtools.py writes no training
    assert same_text(AdapterMeta.from_json(dev, "tmd.json").to_json(), dev)
    newer = {**TRAINED, "seed_sweep": [1, 2]}  # a key this version does not know is kept
    assert same_text(AdapterMeta.from_json(newer, "tmd.json").to_json(), newer)


def test_tmd_json_training_and_errors():
    meta = AdapterMeta.from_json(TRAINED, "tmd.json")
    assert meta.results_training() == TRAINED["training"]
    with pytest.raises(TmdError, match=r"^a/tmd.json: field 'module': unknown module 'critic'"):
        AdapterMeta.from_json({**TRAINED, "module": "critic"}, "a/tmd.json")
    with pytest.raises(TmdError, match=r"field 'training': expected an object"):
        AdapterMeta.from_json({**TRAINED, "training": [1]}, "tmd.json")


# --- the bundle manifest ---------------------------------------------------------------------

def test_manifest_round_trips_as_the_exporter_writes_it():
    from exporter.bundle import base_module_entry, new_manifest

    modules = {"analyzer": {"mode": "merged", "teacher": "gold", "data": "runs/r/teacher/analyzer.jsonl",
                            "prompt_version": PROMPT_VERSION, "files": {"q8_0": {"file": "a.gguf"}}},
               "reasoner": {"mode": "merged", "teacher": "gold", "data": "runs/r/teacher/reasoner.jsonl",
                            "prompt_version": PROMPT_VERSION, "files": {"q8_0": {"file": "r.gguf"}}},
               "informant": base_module_entry(), "drd": base_module_entry(note="zero-shot")}
    written = new_manifest(modules, base="smollm2-135m-instruct", llama_cpp_version="0.3.36",
                           default_quant="q8_0")
    assert list(written) == ["format", "tmd_version", "created", "base", "teacher", "data", "prompt_version",
                             "llama_cpp_version", "default_quant", "modules"]
    assert list(written["modules"]) == list(ROLES) and written["data"] == "runs/r/teacher"
    manifest = Manifest.from_json(written, "m.json")
    assert same_text(manifest.to_json(), written)
    assert manifest.default_quant == "q8_0" and manifest.prompt_version_warning("m.json") is None


def test_manifest_errors_and_the_prompt_version_warning():
    with pytest.raises(TmdError, match=r"^m.json: field 'format': expected 'tmd-bundle/1', got 'x'"):
        Manifest.from_json({"format": "x"}, "m.json")
    with pytest.raises(TmdError, match=r"field 'modules': expected an object"):
        Manifest.from_json({"format": BUNDLE_FORMAT, "base": "b", "modules": []}, "m.json")
    old = Manifest(base="b", modules={}, prompt_version="paper-appendix-a/v0")
    line = old.prompt_version_warning("models/x/manifest.json")
    assert line.startswith("models/x/manifest.json: prompt_version 'paper-appendix-a/v0' differs from "
                           f"this tmd's '{PROMPT_VERSION}'") and "\n" not in line
    assert Manifest(base="b", modules={}, prompt_version=None).prompt_version_warning("m") is None


# --- results ---------------------------------------------------------------------------------

def result_record() -> dict:
    config = ResultConfig(system="drd", dataset="strategyqa", split="test", teacher="gold",
                          models={"drd": {"name": "b/drd", "sha256": "ab" * 32, "mode": "merged",
                                          "training": {"questions": 9, "epochs": 1.0}}},
                          settings={"temperature": 0.0, "n_threads": 2}, tmd_version="0.1.0",
                          questions={"source": "s.jsonl", "limit": 5, "n": 5})
    answer = {"id": "q1", "system": "drd", "answer": "A", "gold": "A", "correct": True,
              "stated_answer": "A", "answer_source": "stated", "reasoning": "1. x\nFinal Answer: A",
              "stages": {"drd": {"seconds": 1.0, "prompt_tokens": 10, "completion_tokens": 5,
                                 "peak_rss_mb": 300.0}}, "warnings": []}
    return ResultRecord(config.to_json(), answer, "0123456789abcdef", 1.25).to_json()


def test_result_records_round_trip():
    written = result_record()
    assert list(written)[:3] == ["config_key", "config", "id"] and list(written)[-1] == "wall_seconds"
    assert list(written["config"]) == list(ResultConfig.KEYS)
    record = ResultRecord.from_json(written, "r.jsonl:1")
    assert same_text(record.to_json(), written)
    assert same_text(ResultConfig.from_json(written["config"]).to_json(), written["config"])


def test_result_record_errors_name_file_line_and_field():
    bad = result_record()
    bad["correct"] = "no"
    with pytest.raises(TmdError, match=r"^r.jsonl:7: field 'correct': expected true, false or null"):
        ResultRecord.from_json(bad, "r.jsonl:7")
