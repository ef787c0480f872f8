"""Sizes, GGUF headers, footprint estimates and budgets: no model is loaded here."""

import time

import pytest

from tmd_local.errors import TmdError
from tmd_local.memory import (MIB, Footprint, MemoryBudget, estimate_footprint, parse_size,
                              read_gguf_header)


@pytest.mark.parametrize("text, expected", [
    ("600MB", 600 * 10**6), ("600 mb", 600 * 10**6), ("1.5GiB", int(1.5 * 2**30)), ("512KiB", 512 * 1024),
    ("2GB", 2 * 10**9), ("800MiB", 800 * MIB), ("64KB", 64_000), ("1G", 10**9), ("100B", 100)])
def test_parse_size_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, fragment", [("600", "add a unit"), ("12 parsecs", "expected a number"),
                                            ("", "expected a number"), ("MB", "expected a number")])
def test_parse_size_rejects_with_an_example(text, fragment):
    with pytest.raises(TmdError, match=fragment):
        parse_size(text)


def test_gguf_header_is_read_without_the_vocabulary(embedded_model):
    started = time.perf_counter()
    header = read_gguf_header(embedded_model.path)
    assert time.perf_counter() - started < 1.0  # a full GGUFReader takes seconds on this file
    assert header["general.architecture"] == "llama"
    assert header["llama.block_count"] == 30 and header["llama.attention.head_count_kv"] == 3
    assert header["tokenizer.ggml.tokens"] is None  # 49152 strings skipped, not decoded
    assert "im_start" in header["tokenizer.chat_template"]


def test_gguf_tensor_types_are_listed(embedded_model):
    tensors = read_gguf_header(embedded_model.path, tensors=True)["tensors"]
    assert len(tensors) == 272 and tensors["blk.0.attn_q.weight"] == 3  # q4_1


def test_truncated_header_is_a_clear_error(tmp_path, embedded_model):
    cut = tmp_path / "cut.gguf"
    with open(embedded_model.path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(4096))
    with pytest.raises(TmdError, match="truncated or corrupt"):
        read_gguf_header(cut)


def test_footprint_is_file_plus_kv_cache_plus_overhead(embedded_model):
    fp = estimate_footprint(embedded_model.path, n_ctx=2048)
    # 30 layers x 2048 positions x 3 kv heads x (64 + 64) dims x 2 bytes (f16)
    assert fp.kv_bytes == 30 * 2048 * 3 * 128 * 2
    assert fp.file_bytes == embedded_model.path.stat().st_size
    assert fp.total_bytes > fp.file_bytes + fp.kv_bytes
    assert estimate_footprint(embedded_model.path, n_ctx=4096).kv_bytes == 2 * fp.kv_bytes
    assert "n_ctx 2048" in fp.describe()


def test_budget_refusal_names_the_figure_needed(embedded_model):
    fp = estimate_footprint(embedded_model.path, n_ctx=2048)
    budget = MemoryBudget.parse("150MB")
    assert not budget.fits(fp, resident_mb=60)
    with pytest.raises(TmdError) as e:
        budget.check("analyzer (model.gguf)", fp, resident_mb=60)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--max-memory 150MB: loading analyzer (model.gguf) needs about")
    assert f"{(60 * MIB + fp.total_bytes) / MIB:.0f} MiB" in message and "raise it to at least" in message


def test_no_budget_fits_everything():
    assert MemoryBudget.parse(None).fits(Footprint(10**12, 0, 0), resident_mb=10**6)
