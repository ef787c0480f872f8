"""Sizes, footprint estimates and budgets: no model is loaded here."""

import pytest

from tmd_local.core.errors import TmdError
from tmd_local.core.memory import MIB, Footprint, MemoryBudget, estimate_footprint, parse_size


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
