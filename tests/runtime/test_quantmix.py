"""--memory-budget: the best measured per-module quant mix within a budget, from results JSONL files.

The bundle's files here are small stand-ins with distinct contents (so distinct sha256): picking reads
only manifests and results, never loads a model. The results lines have the shape `tmd eval` writes.
"""

import json

import pytest
from click.testing import CliRunner

from runtime_helpers import ROLES, file_entry, write_manifest
from tmd_local.runtime.bundle import load_bundle
from tmd_local.cli import cli
from tmd_local.core.errors import TmdError
from tmd_local.evaluation.quantmix import pick_quant

QUANTS = ("f16", "q8_0", "q4_k_m")


@pytest.fixture
def bundle_dir(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    modules = {}
    for role in ROLES:
        files = {}
        for quant in QUANTS:
            path = folder / f"{role}.{quant}.gguf"
            path.write_text(f"{role} {quant}")
            files[quant] = file_entry(path)
        modules[role] = {"mode": "merged", "files": files}
    write_manifest(folder, modules)
    return folder


def write_results(path, bundle_dir, system, mix: dict, correct: int, n: int, peak_mb: float,
                  dataset="strategyqa"):
    """n result lines for one configuration: `correct` of them right, every stage at `peak_mb`."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    models = {role: {"name": f"mixed/{role}", "file_type": quant,
                     "sha256": manifest["modules"][role]["files"][quant]["sha256"]}
              for role, quant in mix.items()}
    config = {"system": system, "dataset": dataset, "split": "test", "teacher": "gold", "models": models,
              "settings": {"n_ctx": 2048, "n_threads": 2, "temperature": 0.0, "seed": 0},
              "prompt_version": "v", "tmd_version": "0.1.0"}
    with path.open("a") as f:
        for i in range(n):
            stages = {role: {"peak_rss_mb": peak_mb, "prompt_tokens": 10, "completion_tokens": 5} for role in mix}
            f.write(json.dumps({"config_key": "x", "config": config, "id": f"q{i}", "correct": i < correct,
                                "answer": "A" if i < correct else "B", "stages": stages, "wall_seconds": 1.0}) + "\n")


def tmd_mix(default, **overrides):
    return {role: overrides.get(role, default) for role in ("analyzer", "informant", "reasoner")}


@pytest.fixture
def measured(tmp_path, bundle_dir):
    results = tmp_path / "results.jsonl"
    write_results(results, bundle_dir, "tmd", tmd_mix("f16"), correct=60, n=100, peak_mb=420)
    write_results(results, bundle_dir, "tmd", tmd_mix("f16", reasoner="q4_k_m"), correct=58, n=100, peak_mb=415)
    write_results(results, bundle_dir, "tmd", tmd_mix("q8_0"), correct=59, n=100, peak_mb=290)
    write_results(results, bundle_dir, "tmd", tmd_mix("q4_k_m"), correct=50, n=100, peak_mb=250)
    write_results(results, bundle_dir, "drd", {"drd": "q8_0"}, correct=40, n=100, peak_mb=280)
    return results


@pytest.mark.parametrize("budget, expected", [
    ("1GB", "f16"),            # everything fits: the most accurate
    ("300MiB", "q8_0"),        # f16 (420) and f16+reasoner q4 (415) do not fit
    ("260MiB", "q4_k_m"),
])
def test_budget_picks_the_most_accurate_measured_mix_that_fits(bundle_dir, measured, budget, expected):
    quant, picks = pick_quant(load_bundle(bundle_dir), budget, ("tmd",), (measured,))
    assert quant == expected and picks[0].quant_text == expected


def test_one_module_quantized_wins_when_it_is_what_fits(tmp_path, bundle_dir):
    results = tmp_path / "r.jsonl"
    write_results(results, bundle_dir, "tmd", tmd_mix("f16"), correct=60, n=100, peak_mb=420)
    write_results(results, bundle_dir, "tmd", tmd_mix("f16", reasoner="q4_k_m"), correct=58, n=100, peak_mb=380)
    quant, _ = pick_quant(load_bundle(bundle_dir), "400MiB", ("tmd",), (results,))
    assert quant == "f16,reasoner=q4_k_m"
    assert load_bundle(bundle_dir).module_set(quant).reasoner.quant == "q4_k_m"


def test_mixes_are_compared_on_the_questions_they_all_answered(tmp_path, bundle_dir):
    results = tmp_path / "r.jsonl"
    # f16: 200 questions, right on the first 100 only (50% overall); the mix: the first 100, 60% right.
    write_results(results, bundle_dir, "tmd", tmd_mix("f16"), correct=100, n=200, peak_mb=420)
    write_results(results, bundle_dir, "tmd", tmd_mix("f16", reasoner="q4_k_m"), correct=60, n=100, peak_mb=415)
    quant, [pick] = pick_quant(load_bundle(bundle_dir), "1GB", ("tmd",), (results,))
    assert quant == "f16" and pick.n == 100 and pick.accuracy == 1.0  # on the shared first 100
    assert pick.describe() == "f16: 100.0% on 100 strategyqa questions, peak 420 MiB"


def test_systems_combine_into_one_quant_text(bundle_dir, measured):
    quant, picks = pick_quant(load_bundle(bundle_dir), "300MiB", ("tmd", "drd"), (measured,))
    assert quant == "q8_0" and [p.system for p in picks] == ["tmd", "drd"]


def test_results_of_other_files_do_not_count(tmp_path, bundle_dir, measured):
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text((bundle_dir / "manifest.json").read_text().replace(
        json.loads((bundle_dir / "manifest.json").read_text())["modules"]["analyzer"]["files"]["f16"]["sha256"],
        "0" * 64))
    for role in ROLES:
        for quant in QUANTS:
            (other / f"{role}.{quant}.gguf").write_text(f"{role} {quant}")
    quant, picks = pick_quant(load_bundle(other), "1GB", ("tmd",), (measured,))
    assert quant == "q8_0"  # both f16 mixes ran an analyzer file this bundle does not have


def test_nothing_fits_names_the_smallest_measured(bundle_dir, measured):
    with pytest.raises(TmdError, match=r"--memory-budget 100MB: no measured TMD mix of mixed fits; "
                                       r"the smallest is q4_k_m: 50.0% on 100 strategyqa questions, peak 250 MiB"):
        pick_quant(load_bundle(bundle_dir), "100MB", ("tmd",), (measured,))


def test_no_results_says_how_to_measure(tmp_path, bundle_dir):
    with pytest.raises(TmdError, match=r"no TMD results for bundle mixed in .*; measure some first, e\.g\. tmd eval"):
        pick_quant(load_bundle(bundle_dir), "1GB", ("tmd",), (tmp_path / "empty",))


def test_cli_budget_and_quant_are_exclusive_and_errors_are_one_line(bundle_dir, measured):
    runner = CliRunner()
    both = runner.invoke(cli, ["ask", "Q?", "--option", "A=x", "--option", "B=y", "--bundle", str(bundle_dir),
                               "--quant", "f16", "--memory-budget", "1GB"])
    assert both.exit_code == 1 and "give --quant or --memory-budget, not both" in both.output
    tiny = runner.invoke(cli, ["ask", "Q?", "--option", "A=x", "--option", "B=y", "--bundle", str(bundle_dir),
                               "--memory-budget", "10MB", "--results", str(measured)])
    assert tiny.exit_code == 1 and "Traceback" not in tiny.output
    assert tiny.output.strip().splitlines()[-1].startswith("Error: --memory-budget 10MB: no measured TMD mix")


def test_cli_says_in_one_line_that_the_bundle_was_trained_on_other_prompts(bundle_dir, measured):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    (bundle_dir / "manifest.json").write_text(json.dumps({**manifest, "prompt_version": "v"}))
    ran = CliRunner().invoke(cli, ["ask", "Q?", "--option", "A=x", "--option", "B=y", "--bundle", str(bundle_dir),
                                   "--memory-budget", "10MB", "--results", str(measured)])
    lines = ran.output.strip().splitlines()
    warned = [line for line in lines if "prompt_version 'v' differs from this tmd's" in line]
    assert len(warned) == 1 and warned[0].startswith(str(bundle_dir)) and lines[-1].startswith("Error:")


def test_report_shows_each_mix_and_the_per_module_sensitivity(tmp_path, bundle_dir):
    from tmd_local.evaluation.report import write_report

    results = tmp_path / "r.jsonl"
    write_results(results, bundle_dir, "tmd", tmd_mix("f16"), correct=60, n=100, peak_mb=420)
    write_results(results, bundle_dir, "tmd", tmd_mix("f16", reasoner="q4_k_m"), correct=52, n=100, peak_mb=415)
    write_results(results, bundle_dir, "tmd", tmd_mix("f16", analyzer="q4_k_m"), correct=40, n=50, peak_mb=415)
    write_results(results, bundle_dir, "tmd", tmd_mix("q4_k_m"), correct=50, n=100, peak_mb=250)
    text = write_report([results], tmp_path / "rep" / "report.md").read_text()
    assert "| TMD | strategyqa | mixed | f16,reasoner=q4_k_m | 52.0 (n=100" in text  # quant table, by mix
    assert "| TMD | mixed f16,reasoner=q4_k_m | gold |" in text                  # accuracy table label
    sensitivity = text.split("## Per-module quantization sensitivity")[1]
    assert "| TMD | strategyqa | reasoner | f16 -> q4_k_m | 52.0 (n=100, CI 42-62) | -8.0 (n=100) | 92.0% |" in sensitivity
    # analyzer ran on the first 50 only: the change is measured on those 50 (f16 got all 50 right)
    assert "| TMD | strategyqa | analyzer | f16 -> q4_k_m | 80.0 (n=50, CI 67-89) | -20.0 (n=50) | 80.0% |" in sensitivity
