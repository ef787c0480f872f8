"""Config validation and the data side of training: reading teacher sets, masking, truncation,
length-grouped batches and dynamic padding. No model runs here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tmd_local.core.errors import TmdError
from tmd_local.core.prompts import render_messages
from trainer.config import TrainConfig, default_target_modules
from trainer.data import (IGNORE_INDEX, build_examples, collate, cut_examples_warning, length_grouped_batches,
                          load_records, padding_ratio, split_heldout, truncate_prompt)


def cfg(**changes):
    return TrainConfig(**{"module": "analyzer", "data": Path("t"), "out": Path("o"), **changes})


# --- config ----------------------------------------------------------------------------------

def test_defaults_are_the_papers():
    c = cfg()
    assert (c.lora_r, c.lora_alpha, c.lora_dropout) == (16, 8, 0.1)
    assert (c.lr, c.weight_decay, c.epochs, c.batch_size, c.grad_accum, c.max_length) == (1e-4, 0.01, 3, 2, 4, 512)
    assert c.pad_to_max is False and c.eval_fraction == 0.05
    hp = c.hyperparameters()
    assert hp["optimizer"] == "adamw" and hp["lr_schedule"] == "linear" and hp["lora_r"] == 16
    assert "data" not in hp and "out" not in hp


@pytest.mark.parametrize("field, value", [
    ("module", "planner"), ("lora_r", 0), ("lora_alpha", -1), ("lora_dropout", 1.0), ("lr", 0),
    ("lr", float("nan")), ("epochs", 0), ("batch_size", 1.5), ("grad_accum", 0), ("max_length", 8),
    ("weight_decay", -0.1), ("eval_fraction", 0.7), ("truncation", "right"), ("precision", "int8"),
    ("device", "tpu"), ("max_steps", 0), ("save_every", -1), ("save_minutes", -1),
    ("save_minutes", float("nan")), ("target_modules", []), ("threads", 0),
])
def test_invalid_config_names_field_and_value(field, value):
    with pytest.raises(TmdError, match=re.escape(f"training config: {field}={value!r}: expected")):
        cfg(**{field: value})


def test_target_modules_per_architecture():
    assert default_target_modules("llama", []) == ["q_proj", "k_proj", "v_proj", "o_proj",
                                                   "gate_proj", "up_proj", "down_proj"]
    assert default_target_modules("somethingnew", ["fc_in", "lm_head", "fc_out", "fc_in"]) == ["fc_in", "fc_out"]
    assert cfg(target_modules=["q_proj", " v_proj ", ""]).target_modules == ["q_proj", "v_proj"]


def test_data_file_resolution(tmp_path):
    assert cfg(data=tmp_path / "teacher", module="drd").data_file() == tmp_path / "teacher" / "drd.jsonl"
    assert cfg(data=tmp_path / "x.jsonl").data_file() == tmp_path / "x.jsonl"


# --- reading teacher sets --------------------------------------------------------------------

def test_fixture_sets_load(teacher_dir):
    for module, n in (("analyzer", 12), ("informant", 17), ("reasoner", 12), ("drd", 12)):
        records = load_records(teacher_dir / f"{module}.jsonl", module)
        assert len(records) == n and all(r.teacher == "gold" for r in records)
    informant = load_records(teacher_dir / "informant.jsonl", "informant")
    assert informant[0].id == "q01#1" and informant[0].group == "q01"


def _line(**changes):
    record = {"id": "q1", "module": "analyzer", "messages": [{"role": "user", "content": "hi"}],
              "target": "1. x", "teacher": "gold"}
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not None})


@pytest.mark.parametrize("lines, message", [
    ([], r"a\.jsonl: no training examples \(the file is empty\)"),
    (["", "  "], r"a\.jsonl: no training examples"),
    ([_line(), "{not json"], r"a\.jsonl:2: not valid JSON"),
    ([_line(target="")], r"a\.jsonl:1: field 'target': expected a non-empty string"),
    ([_line(target=None)], r"a\.jsonl:1: field 'target'"),
    ([_line(messages=[])], r"a\.jsonl:1: field 'messages'"),
    ([_line(messages=[{"role": "user"}])], r"a\.jsonl:1: field 'messages\[0\]'"),
    ([_line(), _line(module="drd")], r"a\.jsonl:2: field 'module' is 'drd', expected 'analyzer'"),
    ([_line(teacher=None)], r"a\.jsonl:1: field 'teacher'"),
    (["[1, 2]"], r"a\.jsonl:1: expected a JSON object"),
])
def test_malformed_training_set_is_one_clear_error(tmp_path, lines, message):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(TmdError, match=message):
        load_records(path, "analyzer")


def test_missing_training_set(tmp_path):
    with pytest.raises(TmdError, match=r"nope\.jsonl: no such file"):
        load_records(tmp_path / "nope.jsonl", "analyzer")


# --- tokenizing and masking ------------------------------------------------------------------

def test_example_is_rendered_prompt_plus_target_plus_eos(teacher_dir, tokenizer):
    [record] = load_records(teacher_dir / "analyzer.jsonl", "analyzer")[:1]
    [ex], stats = build_examples([record], tokenizer, 512)
    prompt = render_messages(record.messages, tokenizer.chat_template, bos_token=tokenizer.bos_token,
                             eos_token=tokenizer.eos_token, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(record.target, add_special_tokens=False)["input_ids"]
    assert ex.input_ids == prompt_ids + target_ids + [tokenizer.eos_token_id]
    assert ex.n_prompt == len(prompt_ids) and ex.n_target == len(target_ids) + 1
    assert stats.truncated == 0 and stats.dropped == 0


def test_labels_mask_prompt_and_padding(teacher_dir, tokenizer):
    records = load_records(teacher_dir / "informant.jsonl", "informant")[:3]
    examples, _ = build_examples(records, tokenizer, 512)
    pad = tokenizer.pad_token_id
    batch = collate(examples, pad)
    width = max(len(e) for e in examples)
    assert batch["input_ids"].shape == (3, width)  # dynamic: as wide as the longest, not 512
    for row, (e, rec) in enumerate(zip(examples, records)):
        labels = batch["labels"][row].tolist()
        assert labels[:e.n_prompt] == [IGNORE_INDEX] * e.n_prompt
        assert labels[len(e):] == [IGNORE_INDEX] * (width - len(e))
        assert batch["attention_mask"][row].tolist() == [1] * len(e) + [0] * (width - len(e))
        learned = [t for t in labels if t != IGNORE_INDEX]
        assert learned[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(learned[:-1]) == rec.target
    assert batch["n_target"] == sum(e.n_target for e in examples)
    assert batch["first_target"] == min(e.n_prompt for e in examples)

    padded = collate(examples, pad, pad_to=512)
    assert padded["input_ids"].shape == (3, 512)
    assert (padded["labels"] != IGNORE_INDEX).sum() == (batch["labels"] != IGNORE_INDEX).sum()


def test_truncation_keeps_target_and_cuts_prompt(teacher_dir, tokenizer):
    records = load_records(teacher_dir / "reasoner.jsonl", "reasoner")
    full, _ = build_examples(records, tokenizer, 4096)
    limit = 120
    for how in ("middle", "left"):
        cut, stats = build_examples(records, tokenizer, limit, truncation=how)
        kept = {e.id: e for e in cut}
        assert stats.truncated == sum(1 for e in full if len(e) > limit and e.id in kept)
        assert stats.truncated > 0 and stats.dropped == len(full) - len(cut)
        for e in full:
            if e.id not in kept:
                assert e.n_target > limit - 8  # dropped only when the target itself leaves no room
                continue
            c = kept[e.id]
            assert len(c) <= limit
            assert c.input_ids[c.n_prompt:] == e.input_ids[e.n_prompt:]  # the target is whole
            if how == "middle" and c.truncated:
                head = c.n_prompt // 2
                assert c.input_ids[:head] == e.input_ids[:head]  # the template header survives
                tail = c.n_prompt - head
                assert c.input_ids[c.n_prompt - tail:c.n_prompt] == e.input_ids[e.n_prompt - tail:e.n_prompt]
            if how == "left" and c.truncated:
                assert c.input_ids[:c.n_prompt] == e.input_ids[e.n_prompt - c.n_prompt:e.n_prompt]
        assert stats.longest_needed == max(len(e) for e in full)
        warning = cut_examples_warning(Path("reasoner.jsonl"), stats, limit, how)
        assert f"{stats.truncated} of {len(records)} prompts lose their {how if how == 'middle' else 'start'}" in warning
        assert f"needs {stats.longest_needed} tokens, --max-length {-(-stats.longest_needed // 64) * 64}" in warning
    assert truncate_prompt(list(range(10)), 4, "middle") == [0, 1, 8, 9]
    assert truncate_prompt(list(range(10)), 4, "left") == [6, 7, 8, 9]


def test_target_too_long_is_dropped_and_counted(tokenizer):
    from trainer.data import TeacherRecord

    rec = TeacherRecord("x", "x", [{"role": "user", "content": "Q"}], "word " * 200, "gold", "", 1)
    ok = TeacherRecord("y", "y", [{"role": "user", "content": "Q"}], "fine", "gold", "", 2)
    examples, stats = build_examples([rec, ok], tokenizer, 64)
    assert [e.id for e in examples] == ["y"] and stats.dropped == 1 and stats.dropped_ids == ["x"]


# --- batches ---------------------------------------------------------------------------------

def test_length_grouped_batches_are_deterministic_and_complete():
    lengths = [((i * 37) % 101) + 10 for i in range(75)]
    a = length_grouped_batches(lengths, 2, seed=3, epoch=0)
    assert a == length_grouped_batches(lengths, 2, seed=3, epoch=0)
    assert a != length_grouped_batches(lengths, 2, seed=4, epoch=0)
    assert a != length_grouped_batches(lengths, 2, seed=3, epoch=1)
    flat = sorted(i for b in a for i in b)
    assert flat == list(range(75)) and all(1 <= len(b) <= 2 for b in a)
    # grouping by length pads far less than random batches, and far less than padding to 512
    grouped = padding_ratio(a, lengths, None)
    import random
    order = list(range(75))
    random.Random(0).shuffle(order)
    random_batches = [order[i:i + 2] for i in range(0, 75, 2)]
    assert grouped < padding_ratio(random_batches, lengths, None) / 2
    assert padding_ratio(a, lengths, 512) > 0.8


def test_heldout_split_keeps_questions_together(teacher_dir, tokenizer):
    records = load_records(teacher_dir / "informant.jsonl", "informant")
    examples, _ = build_examples(records, tokenizer, 512)
    train, held = split_heldout(examples, 0.2, seed=0)
    assert held and train and len(train) + len(held) == len(examples)
    assert not {e.group for e in train} & {e.group for e in held}
    assert [e.id for e in held] == [e.id for e in split_heldout(examples, 0.2, seed=0)[1]]
    assert split_heldout(examples, 0.0, seed=0) == (examples, [])
