"""exporter/plan.py: the one plan behind the step count, the space estimate and the execution."""

from __future__ import annotations

import pytest

from exporter.plan import Mode, Request, plan, space_needed, step_count


def request(mode="merged", quants=("f16", "q8_0"), adapters=("analyzer",), zero_shot=(), verify=True,
            base_files=False) -> Request:
    return Request(mode=Mode(mode), quants=tuple(quants), adapter_roles=tuple(adapters),
                   zero_shot=tuple(zero_shot), verify=verify, base_files=base_files)


def actions(steps, role=None):
    return [(s.action, s.target) for s in steps if role is None or s.role == role]


def test_merged_mode_merges_converts_quantizes_and_checks_each_file():
    steps = plan(request())
    assert actions(steps) == [("converter", "llama.cpp"), ("merge", "merged/analyzer"),
                              ("convert", "analyzer.f16.gguf"), ("quantize", "analyzer.q8_0.gguf"),
                              ("verify", "analyzer.f16.gguf"), ("verify", "analyzer.q8_0.gguf")]
    quantize = steps[3]
    assert quantize.source == "analyzer.f16.gguf" and not steps[2].in_work


def test_an_f16_not_asked_for_is_an_intermediate_in_work():
    steps = plan(request(quants=("q8_0", "bf16")))
    f16, rest = steps[2], steps[3:5]
    assert (f16.target, f16.in_work) == ("analyzer.f16.gguf", True)
    assert [(s.action, s.quant) for s in rest] == [("quantize", "q8_0"), ("convert", "bf16")]


def test_adapter_mode_ships_base_files_and_the_lora_checked_together():
    steps = plan(request(mode="adapter", base_files=True))
    assert actions(steps, "base") == [("convert", "base.f16.gguf"), ("quantize", "base.q8_0.gguf")]
    assert actions(steps, "analyzer") == [("lora", "analyzer.lora.gguf"), ("merge", "merged/analyzer"),
                                          ("verify", "base.f16.gguf"), ("verify", "base.q8_0.gguf")]
    merge = next(s for s in steps if s.action == "merge")
    assert merge.in_memory  # only as the checks' reference: nothing on disk
    assert {s.source for s in steps if s.action == "verify"} == {"analyzer.lora.gguf"}


def test_both_mode_is_merged_then_the_lora_form():
    both = actions(plan(request(mode="both", base_files=True)), "analyzer")
    merged = actions(plan(request(mode="merged")), "analyzer")
    assert both[:len(merged)] == merged
    assert both[len(merged):] == [("lora", "analyzer.lora.gguf"), ("verify", "base.f16.gguf"),
                                  ("verify", "base.q8_0.gguf")]


def test_zero_shot_roles_are_checked_against_the_base_last():
    steps = plan(request(adapters=(), zero_shot=("informant", "drd"), base_files=True))
    assert [(s.role, s.kind, s.target) for s in steps[-4:]] == [
        ("informant", "base", "base.f16.gguf"), ("informant", "base", "base.q8_0.gguf"),
        ("drd", "base", "base.f16.gguf"), ("drd", "base", "base.q8_0.gguf")]


def test_without_verify_entries_are_recorded_but_not_counted():
    checked, unchecked = plan(request()), plan(request(verify=False))
    assert [s.action for s in unchecked].count("record") == 2 and "verify" not in {s.action for s in unchecked}
    assert step_count(checked) == len(checked) == 6
    assert step_count(unchecked) == 4
    assert not any(s.action == "merge" and s.in_memory for s in plan(request(mode="adapter", verify=False)))


@pytest.mark.parametrize("mode", ["merged", "adapter", "both"])
def test_space_grows_with_what_the_plan_writes(mode):
    n = 1_000_000
    small = space_needed(plan(request(mode=mode, quants=("q8_0",), base_files=True)), n)
    large = space_needed(plan(request(mode=mode, quants=("f16", "q8_0", "q4_k_m"), base_files=True)), n)
    two = space_needed(plan(request(mode=mode, quants=("q8_0",), adapters=("analyzer", "drd"),
                                    base_files=True)), n)
    assert 0 < small < large and small < two
    assert space_needed(plan(request(mode=mode, verify=False)), n) == space_needed(plan(request(mode=mode)), n) \
        or mode == "adapter"


def test_bad_mode_is_one_line():
    from exporter.export import parse_mode
    from tmd_local.core.errors import TmdError

    with pytest.raises(TmdError, match=r"^--mode merge: expected merged, adapter or both$"):
        parse_mode("merge")
    assert parse_mode("both") is Mode.BOTH and Mode.BOTH.merges and Mode.BOTH.ships_lora
    assert not Mode.ADAPTER.merges and not Mode.MERGED.ships_lora
