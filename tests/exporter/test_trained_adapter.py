"""The trainer's real output (a tiny LoRA trained on the fixture teacher run) exported as it is: the
manifest carries tmd.json's teacher, data, prompt version and training, and results name them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tmd_local.core.formats import AdapterMeta

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trainer"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_a_trained_adapter_exports_and_its_bundle_names_how_it_was_trained(tiny_base, converter, tmp_path):
    from exporter.bundle import read_manifest
    from exporter.export import ExportOptions, export
    from tmd_local.evaluation.evaluate import run_config
    from tmd_local.runtime.generation import GenerationSettings
    from tmd_local.core.prompts import PROMPT_VERSION
    from trainer.config import TrainConfig
    from trainer.train import train

    adapters = tmp_path / "run" / "adapters"
    train(TrainConfig(module="reasoner", data=FIXTURES, out=adapters / "reasoner", base=str(tiny_base),
                      lr=2e-3, epochs=1, batch_size=2, grad_accum=2, max_length=512, eval_fraction=0.2,
                      save_every=0, device="cpu", precision="fp32", threads=2, progress=False))
    tmd_path = adapters / "reasoner" / "tmd.json"
    tmd = AdapterMeta.from_json(json.loads(tmd_path.read_text()), str(tmd_path))
    assert tmd.training["lr"] == 2e-3 and tmd.prompt_version == PROMPT_VERSION

    out = tmp_path / "bundle"
    # The base comes from tmd.json. A zero-shot DRD lists the base GGUF with its sha256, which the
    # roles left on the (non-registry) base need before they can load.
    export(ExportOptions(adapters=adapters, out=out, quants=["q8_0"], mode="merged", threads=1,
                         zero_shot=["drd"], min_agreement=0.9))
    bundle = read_manifest(out, check="sha256")
    entry = bundle.manifest["modules"]["reasoner"]
    assert (entry["mode"], entry["source_adapter"]) == ("merged", str(adapters / "reasoner"))
    assert entry["training"] == tmd.training and entry["trained_with_tmd"] == tmd.tmd_version
    assert (entry["teacher"], entry["data"], entry["prompt_version"]) == (tmd.teacher, tmd.data, PROMPT_VERSION)
    assert bundle.manifest["base_model"] == "tiny-llama" and bundle.warnings == []
    assert {r.mode for n, r in bundle.roles.items() if n != "reasoner"} == {"base"}

    config = run_config("tmd", bundle.module_set(), GenerationSettings(), dataset="strategyqa", split="test",
                        source=bundle)
    assert config["teacher"] == tmd.teacher and config["prompt_version"] == PROMPT_VERSION
    assert config["models"]["reasoner"]["mode"] == "merged" and config["models"]["reasoner"]["training"] == tmd.training
    assert config["models"]["analyzer"]["mode"] == "base" and "training" not in config["models"]["analyzer"]
