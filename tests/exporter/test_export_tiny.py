"""End to end on a tiny random Llama: merge, llama.cpp conversion, quantization, read-back,
verification, adapter mode, manifest atomicity and resume, and the CLI's one-line errors."""

from __future__ import annotations

import errno
import shutil
from collections import Counter

import pytest
from click.testing import CliRunner

from exporter import bundle as B
from exporter.export import ExportOptions, Reporter, export
from tmd_local.core.errors import TmdError

QUANTS = ["f16", "q8_0", "q4_k_m"]


class Recorder(Reporter):
    def __init__(self):
        self.finished = []
        self.total = None

    def begin(self, total):
        self.total = total

    def step_finished(self, label, seconds, cached):
        self.finished.append((label, cached))


def tiny_options(adapters, out, tiny_base, **kw) -> ExportOptions:
    defaults = dict(adapters=adapters, out=out, quants=QUANTS, mode="both", threads=1, base=str(tiny_base),
                    zero_shot=["informant"], min_agreement=0.9)  # random tiny weights: near-tied logits
    defaults.update(kw)
    return ExportOptions(**defaults)


@pytest.fixture(scope="module")
def tiny_bundle(tiny_adapters, tiny_base, converter, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    rec = Recorder()
    result = export(tiny_options(tiny_adapters, out, tiny_base), rec)
    return out, result, rec


def test_bundle_contents_and_manifest(tiny_bundle, tiny_base):
    out, result, _ = tiny_bundle
    bundle = B.read_manifest(out, check="sha256")
    m = bundle.manifest
    assert m["base"] == "base.q8_0.gguf" and m["base_model"] == "tiny-llama"  # not a registry model
    assert m["llama_cpp_version"] and m["default_quant"] == "q8_0"
    modes = {r: e.mode for r, e in bundle.roles.items()}
    assert modes == {"analyzer": "merged", "informant": "base", "reasoner": "base", "drd": "base"}
    analyzer = m["modules"]["analyzer"]
    assert list(analyzer["files"]) == QUANTS and analyzer["teacher"] == "random-dev"
    assert set(analyzer["adapter"]["base_files"]) == set(QUANTS)
    assert analyzer["adapter"]["rank"] == 4 and analyzer["adapter"]["lora_alpha"] == 8.0
    assert list(m["modules"]["informant"]["files"]) == QUANTS
    assert "files" not in m["modules"]["drd"]  # runs on the manifest's base
    for name in ("analyzer.f16.gguf", "analyzer.q8_0.gguf", "analyzer.q4_k_m.gguf", "analyzer.lora.gguf",
                 "base.f16.gguf", "base.q8_0.gguf", "base.q4_k_m.gguf", "manifest.json"):
        assert (out / name).is_file(), name
    assert (out / "merged" / "analyzer" / "model.safetensors").is_file()
    assert (out / "merged" / "analyzer" / "tokenizer.json").is_file()
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.partial"))
    assert not (out / ".tmd-export" / "work").exists()


def test_the_progress_total_is_the_plans_step_count(tiny_bundle):
    """A first export runs every planned step once (merges included), so the bar ends full."""
    _, result, rec = tiny_bundle
    assert rec.total == len(rec.finished) == len(result.steps) == 18
    assert [label for label, _ in rec.finished].count("analyzer: merge LoRA -> HF") == 1


def test_gguf_metadata_and_real_bits_per_weight(tiny_bundle, tiny_base):
    import gguf
    from transformers import AutoTokenizer

    from tmd_local.core.gguf_file import read_gguf_header

    out, result, _ = tiny_bundle
    tok = AutoTokenizer.from_pretrained(str(tiny_base))
    entry = B.read_manifest(out).manifest["modules"]["analyzer"]
    for quant, f in entry["files"].items():
        meta = read_gguf_header(out / f["file"])
        assert meta["tmd.role"] == "analyzer" and meta["tmd.mode"] == "merged"
        assert meta["tmd.base"] == "tiny-llama" and meta["tmd.teacher"] == "random-dev"
        assert meta["tmd.prompt_version"] and meta["tmd.adapter_sha256"] == entry["adapter_sha256"]
        assert meta["tokenizer.chat_template"] == tok.chat_template
        assert meta["tokenizer.ggml.eos_token_id"] == tok.eos_token_id and f["eos_token_ids"] == [tok.eos_token_id]
        assert f["file_type"] == quant
    # Real bits per weight, recomputed from the tensors themselves (GGUFReader, independent of ours).
    q4 = entry["files"]["q4_k_m"]
    reader = gguf.GGUFReader(str(out / q4["file"]))
    bits = sum(int(t.n_bytes) for t in reader.tensors) * 8 / sum(int(t.n_elements) for t in reader.tensors)
    assert q4["bits_per_weight"] == pytest.approx(bits, abs=1e-3)
    assert q4["tensor_types"] == dict(Counter(t.tensor_type.name for t in reader.tensors))
    # Widths of 64/160 are not multiples of 256: q4_k_m falls back to 32-block types throughout.
    assert "Q4_K" not in q4["tensor_types"] and {"Q5_0", "Q8_0"} & set(q4["tensor_types"])
    assert q4["bits_per_weight"] > 5  # far from the nominal ~4.8
    assert entry["files"]["f16"]["bits_per_weight"] == pytest.approx(16, abs=0.1)
    assert entry["files"]["q8_0"]["bits_per_weight"] == pytest.approx(8.5, abs=0.1)
    lora = read_gguf_header(out / "analyzer.lora.gguf")
    assert lora["general.type"] == "adapter" and lora["adapter.lora.alpha"] == 8.0
    assert lora["tmd.mode"] == "adapter" and lora["tmd.role"] == "analyzer"
    base = read_gguf_header(out / "base.q8_0.gguf")
    assert base["tmd.role"] == "base" and "tmd.adapter_sha256" not in base


def test_verification_figures(tiny_bundle):
    out, result, _ = tiny_bundle
    m = B.read_manifest(out).manifest
    files = m["modules"]["analyzer"]["files"]
    assert files["f16"]["top1_agreement"] >= 0.9 and files["f16"]["agreement_positions"] > 500
    assert files["f16"]["tokenizer_match"] is True
    assert 0 <= files["q4_k_m"]["top1_agreement"] <= 1
    with_lora = m["modules"]["analyzer"]["adapter"]["base_files"]["f16"]
    assert with_lora["top1_agreement"] >= 0.9  # base f16 + LoRA GGUF == merged model
    checks = result.checks
    assert any(c["lora"] == "analyzer.lora.gguf" for c in checks.values())
    f16 = checks["analyzer/analyzer.f16.gguf"]
    assert len(f16["generations"]) == 2 and f16["chat_answer"] is not None
    assert result.references["analyzer"]["generations"][0]["text"] is not None


def test_files_load_in_plain_llama_cpp(tiny_bundle):
    from llama_cpp import Llama

    out, _, _ = tiny_bundle
    llm = Llama(model_path=str(out / "analyzer.q8_0.gguf"), n_ctx=256, n_threads=1, verbose=False)
    try:
        reply = llm.create_chat_completion([{"role": "user", "content": "Hello?"}], max_tokens=8,
                                           temperature=0.0)
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert llm.metadata["tmd.role"] == "analyzer"
    finally:
        llm.close()
    llm = Llama(model_path=str(out / "base.f16.gguf"), lora_path=str(out / "analyzer.lora.gguf"),
                n_ctx=256, n_threads=1, verbose=False)
    llm.close()


def test_rerun_skips_finished_work(tiny_bundle, tiny_adapters, tiny_base):
    out, first, _ = tiny_bundle
    before = B.read_manifest(out).manifest
    rec = Recorder()
    again = export(tiny_options(tiny_adapters, out, tiny_base), rec)
    assert rec.finished and all(cached for label, cached in rec.finished if "converter" not in label)
    after = again.manifest
    for role in ("analyzer", "informant"):
        assert {q: f["sha256"] for q, f in after["modules"][role]["files"].items()} == \
            {q: f["sha256"] for q, f in before["modules"][role]["files"].items()}
    assert again.seconds < 30


def test_rerun_without_f16_does_not_rebuild_the_removed_intermediate(tiny_adapters, tiny_base, tmp_path):
    """q8_0 only: the f16 it is quantized from lives in work/ and is removed when the export ends;
    a rerun finds every q8_0 file done and must not convert that f16 again."""
    out = tmp_path / "q8-only"
    first = Recorder()
    export(tiny_options(tiny_adapters, out, tiny_base, quants=["q8_0"]), first)
    assert any("convert" in label and not cached for label, cached in first.finished)
    assert not list(out.glob("**/*.f16.gguf"))  # the intermediate is gone
    again = Recorder()
    export(tiny_options(tiny_adapters, out, tiny_base, quants=["q8_0"]), again)
    assert all(cached for label, cached in again.finished if "converter" not in label), again.finished
    (out / "analyzer.q8_0.gguf").unlink()  # a product missing: the intermediate is rebuilt for it
    third = Recorder()
    export(tiny_options(tiny_adapters, out, tiny_base, quants=["q8_0"]), third)
    redone = [label for label, cached in third.finished if not cached and "converter" not in label]
    assert "analyzer: convert analyzer.f16.gguf" in redone and "analyzer: quantize analyzer.q8_0.gguf" in redone
    assert B.read_manifest(out, check="sha256").manifest["modules"]["analyzer"]["files"]["q8_0"]


def test_interrupted_export_leaves_no_valid_looking_bundle_and_resumes(tiny_bundle, tiny_adapters,
                                                                      tiny_base, tmp_path, monkeypatch):
    import exporter.quant

    src, _, _ = tiny_bundle
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    (out / "analyzer.q4_k_m.gguf").unlink()
    real = exporter.quant.quantize

    def killed(source, dst, quant, threads=None, log_path=None):
        dst.write_bytes(b"GGUF half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter.quant, "quantize", killed)
    with pytest.raises(KeyboardInterrupt):
        export(tiny_options(tiny_adapters, out, tiny_base))
    assert not (out / "manifest.json").exists()  # taken down before any file changed
    assert not (out / "analyzer.q4_k_m.gguf").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]

    def disk_full(source, dst, quant, threads=None, log_path=None):
        dst.write_bytes(b"GGUF")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exporter.quant, "quantize", disk_full)
    with pytest.raises(TmdError, match="out of disk space"):
        export(tiny_options(tiny_adapters, out, tiny_base))
    assert not (out / "manifest.json").exists() and not (out / "analyzer.q4_k_m.gguf").exists()

    monkeypatch.setattr(exporter.quant, "quantize", real)
    rec = Recorder()
    export(tiny_options(tiny_adapters, out, tiny_base), rec)
    redone = [label for label, cached in rec.finished if not cached]
    # Quantizing is deterministic: the same bytes again, so even its verification is still valid.
    assert redone == ["setup: converter llama.cpp", "analyzer: quantize analyzer.q4_k_m.gguf"]
    assert list(B.read_manifest(out, check="sha256").roles["analyzer"].files) == QUANTS


def test_adapter_mode_bundle(tiny_bundle, tiny_adapters, tiny_base, tmp_path):
    """mode adapter: a bundle of base GGUFs + the LoRA GGUF; reuses the converted files by copying."""
    src, _, _ = tiny_bundle
    out = tmp_path / "adapter"
    shutil.copytree(src, out)
    (out / "manifest.json").unlink()
    for p in out.glob("analyzer.*.gguf"):
        if "lora" not in p.name:
            p.unlink()
    result = export(tiny_options(tiny_adapters, out, tiny_base, mode="adapter", zero_shot=[],
                                 quants=["f16", "q8_0"]))
    bundle = B.read_manifest(out, check="sha256")
    analyzer = bundle.module_set().analyzer
    assert bundle.roles["analyzer"].mode == "adapter"
    assert (analyzer.path.name, analyzer.adapter.name) == ("base.q8_0.gguf", "analyzer.lora.gguf")
    files = bundle.manifest["modules"]["analyzer"]["files"]
    assert list(files) == ["f16", "q8_0"] and files["q8_0"]["top1_agreement"] > 0.5
    assert result.manifest["modules"]["informant"] == {"mode": "base", "note": "not exported: zero-shot base model"}


# --- bad input through the CLI: exit 1, one line, nothing written that looks valid -------------

def run_cli(*args):
    from tmd_local.cli import cli

    return CliRunner().invoke(cli, ["export", *args])


def assert_one_line_error(result, fragment):
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and fragment in lines[0], result.output


def test_cli_bad_inputs(tmp_path, tiny_adapters, tiny_base, hf_base, monkeypatch):
    out = tmp_path / "out"
    assert_one_line_error(run_cli("--adapters", str(tmp_path / "nope"), "--out", str(out)), "no such folder")
    assert_one_line_error(run_cli("--adapters", str(tiny_adapters), "--out", str(out), "--quant", "q4_k_xl"),
                          "unsupported quant type")
    assert_one_line_error(run_cli("--adapters", str(tiny_adapters), "--out", str(out), "--base", str(hf_base)),
                          "trained on base 'tiny-llama', not 'smollm2-135m-instruct'")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run_cli("--adapters", str(tiny_adapters), "--out", str(tmp_path / "file" / "b"),
                                  "--base", str(tiny_base)), "is a file, not a folder")
    import shutil as _shutil

    class Full:
        free = 1000

    monkeypatch.setattr(_shutil, "disk_usage", lambda p: Full())
    assert_one_line_error(run_cli("--adapters", str(tiny_adapters), "--out", str(out), "--base", str(tiny_base)),
                          "GB needed")
    assert not (out / "manifest.json").exists() and not list(out.glob("*.gguf"))


def test_eval_mixes_then_memory_budget_picks_from_the_measured_results(tiny_bundle, tmp_path):
    """The whole loop on real files: `tmd eval` two per-module quant mixes of an exported bundle
    (llama.cpp runs the tiny model), then `tmd ask --memory-budget` picks from those results."""
    import json

    from tmd_local.cli import cli

    out, _, _ = tiny_bundle
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Is {i} even?",
                                             "options": {"A": "yes", "B": "no"}, "answer": "AB"[i % 2]}) + "\n"
                                 for i in range(2)))
    results = tmp_path / "results.jsonl"
    runner = CliRunner()
    for quant in ("f16", "f16,analyzer=q4_k_m"):
        ran = runner.invoke(cli, ["eval", "--dataset", "strategyqa", "--data-path", str(questions), "--bundle", str(out),
                                  "--quant", quant, "--threads", "1", "--n-ctx", "512", "--out", str(results)])
        assert ran.exit_code == 0, ran.output
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["config"]["models"]["analyzer"]["file_type"] for r in lines] == ["f16", "f16", "q4_k_m", "q4_k_m"]

    from tmd_local.runtime.bundle import load_bundle
    from tmd_local.evaluation.quantmix import measured_mixes, pick_quant
    from tmd_local.evaluation.rows import load_results

    measured = measured_mixes(load_bundle(out), load_results([results]), "tmd")
    assert sorted(m.quant_text for m in measured) == ["f16", "f16,analyzer=q4_k_m"]
    best = max(measured, key=lambda m: (m.accuracy, -m.peak_rss_mb))
    quant, _ = pick_quant(load_bundle(out), "10GB", ("tmd",), (results,))
    assert quant == best.quant_text
    asked = runner.invoke(cli, ["ask", "Is 4 even?", "--option", "A=yes", "--option", "B=no", "--bundle", str(out),
                                "--memory-budget", "10GB", "--results", str(results), "--threads", "1",
                                "--n-ctx", "512", "--json"])
    assert asked.exit_code == 0, asked.output
    assert f"--memory-budget 10GB: TMD runs {best.quant_text}:" in asked.output


def test_eval_over_two_bundles_gives_the_table_3_rows(tiny_bundle, tmp_path):
    """`tmd eval --bundle A --bundle B`: one results file, one configuration per bundle, and the
    report's ablation column says which modules each one fine-tuned (from the manifests)."""
    import json

    from tmd_local.cli import cli

    out, _, _ = tiny_bundle
    ablated = tmp_path / "tiny-zero-shot-analyzer"
    shutil.copytree(out, ablated, ignore=shutil.ignore_patterns("merged", ".tmd-export"))
    manifest = json.loads((ablated / "manifest.json").read_text())
    manifest["modules"]["analyzer"] = {"mode": "base"}  # the Analyzer role played by the base model
    (ablated / "manifest.json").write_text(json.dumps(manifest))
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "q0", "question": "Is 2 even?", "options": {"A": "yes", "B": "no"},
                                     "answer": "A"}) + "\n")
    runner = CliRunner()
    args = ["eval", "--dataset", "strategyqa", "--data-path", str(questions), "--bundle", str(out),
            "--bundle", str(ablated), "--quant", "q8_0", "--threads", "1", "--n-ctx", "512",
            "--out", str(tmp_path / "r.jsonl")]
    ran = runner.invoke(cli, args)
    assert ran.exit_code == 0, ran.output
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["config"]["models"]["analyzer"]["mode"] for r in lines] == ["merged", "base"]
    report = runner.invoke(cli, ["report", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "rep" / "r.md")])
    assert report.exit_code == 0, report.output
    text = (tmp_path / "rep" / "r.md").read_text()
    assert "| random-dev | analyzer |" in text and "| random-dev | none (zero-shot) |" in text
    missing = runner.invoke(cli, args[:-2] + ["--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "x.jsonl")])
    assert missing.exit_code == 1 and "no bundle manifest here" in missing.output
    assert not (tmp_path / "x.jsonl").exists()  # every bundle is checked before anything runs
