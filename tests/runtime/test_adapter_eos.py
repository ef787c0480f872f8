"""Adapter bundles over the embedded base: the base's sha256 is checked before load, and an adapter
trained to end its turn at another token than the base's EOS (`adapter.eos_token_id`) runs on a base
loaded with that EOS, so generation stops where the module learned to stop."""

import shutil

import pytest

from runtime_helpers import ROLES, small_settings, write_manifest
from tmd_local.runtime.bundle import load_bundle
from tmd_local.core.errors import TmdError
from tmd_local.runtime.pool import ModulePool
from tmd_local.runtime.runner import LoadedModule

IM_START = 1  # SmolLM2's <|im_start|>; its EOS is <|im_end|> = 2


def adapter_bundle(folder, lora, embedded_model, eos=None, base_sha256=None):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lora, folder / "m.lora.gguf")
    from tmd_local.core.registry import file_sha256
    adapter = {"file": "m.lora.gguf", "sha256": file_sha256(folder / "m.lora.gguf")}
    if eos is not None:
        adapter["eos_token_id"] = eos
    modules = {role: {"mode": "adapter", "adapter": adapter} for role in ROLES}
    return write_manifest(folder, modules, base_sha256=base_sha256 or embedded_model.sha256())


def test_adapter_roles_run_on_the_registry_base_with_the_adapters_eos(tmp_path, loras, embedded_model):
    bundle = load_bundle(adapter_bundle(tmp_path / "b", loras["zero"], embedded_model, eos=IM_START))
    ref = bundle.module_set().for_stage("reasoner")
    assert ref.path == embedded_model.path and ref.eos_token_id == IM_START
    assert ref.sha256_expected == embedded_model.sha256()
    module = LoadedModule(ref, small_settings())
    try:
        assert module._llm.token_eos() == IM_START
    finally:
        module.close()


def test_a_base_loaded_with_another_eos_is_not_reused(tmp_path, loras, embedded_model):
    with_eos = load_bundle(adapter_bundle(tmp_path / "b", loras["zero"], embedded_model, eos=IM_START))
    plain = load_bundle(adapter_bundle(tmp_path / "c", loras["zero"], embedded_model))
    with ModulePool(small_settings(), keep_loaded=True) as pool:
        with pool.use("analyzer", with_eos.module_set().for_stage("analyzer")) as (module, _):
            assert module._llm.token_eos() == IM_START
        with pool.use("drd", plain.module_set().for_stage("drd")) as (module, residency):
            assert module._llm.token_eos() == 2 and residency.how == "load"


def test_a_base_other_than_the_one_trained_on_is_refused_before_load(tmp_path, loras, embedded_model):
    bundle = load_bundle(adapter_bundle(tmp_path / "b", loras["zero"], embedded_model, base_sha256="0" * 64))
    with pytest.raises(TmdError, match=r"sha256"):
        with ModulePool(small_settings()) as pool:
            with pool.use("analyzer", bundle.module_set().for_stage("analyzer")):
                pass


@pytest.mark.parametrize("eos", [-1, "1", True, 1.5])
def test_a_bad_adapter_eos_is_one_line(tmp_path, loras, embedded_model, eos):
    path = adapter_bundle(tmp_path / "b", loras["zero"], embedded_model, eos=eos)
    with pytest.raises(TmdError, match=r"adapter.eos_token_id': expected a token id"):
        load_bundle(path)
