"""tmd_local.core.paths: one overridable home for models, runs, results and caches; the defaults tmd
always had without it; and the test session's own temporary home."""

from __future__ import annotations

import os
from pathlib import Path

import click

from tmd_local.core import paths

CHECKOUT = Path(__file__).resolve().parents[2]


def test_without_tmd_home_the_old_places(monkeypatch):
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    # Outputs relative to the working directory, printed as before ("results/eval.jsonl").
    assert (paths.models_dir(), paths.runs_dir(), paths.results_dir()) == (Path("models"), Path("runs"),
                                                                          Path("results"))
    assert str(paths.results_dir() / "eval.jsonl") == "results/eval.jsonl"
    # The rebuildable artefacts beside the code, where trainer/base.py and exporter/vendor.py kept them.
    assert paths.cache_dir() == CHECKOUT / ".cache"
    assert paths.base_models_dir() == CHECKOUT / "models" / "base"


def test_tmd_home_holds_everything(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    assert [paths.models_dir(), paths.runs_dir(), paths.results_dir(), paths.traces_dir(),
            paths.cache_dir(), paths.base_models_dir()] == [
        tmp_path / "models", tmp_path / "runs", tmp_path / "results", tmp_path / "traces",
        tmp_path / ".cache", tmp_path / "models" / "base"]


def test_tmd_cache_dir_moves_only_the_caches(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    assert paths.cache_dir() == tmp_path / "cache"
    assert paths.base_models_dir() == tmp_path / "cache" / "base"
    assert paths.results_dir() == tmp_path / "home" / "results"


def test_a_blank_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, "  ")
    assert paths.home() == Path(".")


def test_commands_and_readers_follow_tmd_home(monkeypatch, tmp_path):
    from tmd_local.runtime.bundle import MANIFEST, find_bundles
    from tmd_local.cli import cli
    from tmd_local.evaluation.quantmix import result_files

    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    out = next(p for p in cli.commands["eval"].params if p.name == "out")
    assert out.get_default(click.Context(cli.commands["eval"]), call=True) == tmp_path / "results" / "eval.jsonl"
    (tmp_path / "models" / "b").mkdir(parents=True)
    (tmp_path / "models" / "b" / MANIFEST).write_text("{}")
    assert find_bundles() == [tmp_path / "models" / "b"]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.jsonl").write_text("")
    assert result_files(()) == [tmp_path / "results" / "r.jsonl"]


def test_the_session_runs_in_a_temporary_home_outside_the_checkout(tmd_home):
    assert os.environ[paths.HOME_ENV] == str(tmd_home) and tmd_home.is_dir()
    assert CHECKOUT not in tmd_home.resolve().parents
    assert paths.models_dir() == tmd_home / "models"
    assert CHECKOUT not in paths.base_models_dir().resolve().parents
    assert CHECKOUT not in paths.cache_dir().resolve().parents
