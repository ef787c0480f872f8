"""Issue #27, item 5: a bundle whose adapter GGUF or manifest was tampered with is refused before
anything is loaded: one line naming the file and what the manifest promised (test_pool.py checks a
merged file's sha256; this is the adapter of a base + LoRA role, through the pool and through
`tmd ask`)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from runtime_helpers import file_entry, small_settings, write_manifest
from tmd_local.runtime.bundle import load_bundle
from tmd_local.core.errors import TmdError
from tmd_local.runtime.pool import ModulePool


@pytest.fixture
def adapter_bundle(tmp_path, embedded_model, loras):
    """analyzer = base + a LoRA (a real copy, so it can be tampered with); the rest zero-shot."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "base.q4_1.gguf").symlink_to(embedded_model.path)
    shutil.copyfile(loras["a"], folder / "analyzer.lora.gguf")
    modules = {"analyzer": {"mode": "adapter", "files": {"q4_1": file_entry(folder / "base.q4_1.gguf")},
                            "adapter": file_entry(folder / "analyzer.lora.gguf")},
               "informant": {"mode": "base"}, "reasoner": {"mode": "base"}, "drd": {"mode": "base"}}
    write_manifest(folder, modules)
    return folder


def _refused_before_load(folder) -> str:
    analyzer = load_bundle(folder).module_set("q4_1").analyzer
    pool = ModulePool(small_settings())
    with pytest.raises(TmdError) as caught:
        with pool.use("analyzer", analyzer):
            pass
    assert pool.history == [] and not pool.resident  # nothing was loaded
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_untouched_bundle_loads(adapter_bundle):
    analyzer = load_bundle(adapter_bundle).module_set("q4_1").analyzer
    with ModulePool(small_settings()).use("analyzer", analyzer):
        pass


def test_one_flipped_byte_in_the_adapter_is_refused(adapter_bundle):
    adapter = adapter_bundle / "analyzer.lora.gguf"
    data = bytearray(adapter.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only the sha256 can tell
    adapter.write_bytes(bytes(data))
    message = _refused_before_load(adapter_bundle)
    assert message.startswith(str(adapter.resolve())) and "sha256 mismatch" in message and "adapter" in message


def test_an_adapter_swapped_for_another_is_refused(adapter_bundle, loras):
    shutil.copyfile(loras["b"], adapter_bundle / "analyzer.lora.gguf")
    assert "sha256 mismatch" in _refused_before_load(adapter_bundle)


def test_a_manifest_promising_another_adapter_is_refused_through_ask(adapter_bundle):
    from tmd_local.cli import cli

    manifest = adapter_bundle / "manifest.json"
    data = json.loads(manifest.read_text())
    data["modules"]["analyzer"]["adapter"]["sha256"] = "ab" * 32  # well-formed, but not this file's
    manifest.write_text(json.dumps(data))
    assert "sha256 mismatch" in _refused_before_load(adapter_bundle)
    result = CliRunner().invoke(cli, ["ask", "Is fog wet?", "--option", "A=yes", "--option", "B=no",
                                      "--bundle", str(adapter_bundle), "--system", "tmd"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert lines[-1].startswith("Error:") and "sha256 mismatch" in " ".join(result.output.split()), result.output
