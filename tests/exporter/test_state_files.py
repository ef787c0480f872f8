"""Issue #27: the exporter's own state files (state.json, the merge marker, the previous manifest)
and the adapter files it reads go through the bounded JSON reader. A damaged one is one line naming
the file and field, or (for a completeness marker) simply "not finished": never a traceback."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
from click.testing import CliRunner

from exporter.state import STATE_DIR, ExportState
from tmd_local.core.errors import TmdError

GOOD_RECORD = {"fingerprint": "f" * 64, "size": 10, "sha256": "a" * 64, "seconds": 1.0, "file_type": "Q8_0",
               "bits_per_weight": 8.5, "tensor_types": {"Q8_0": 3}, "chat_template_sha256": None,
               "eos_token_ids": [2], "tmd": {}, "general_type": "model"}


def export_cli(*args):
    from tmd_local.cli import cli

    return CliRunner().invoke(cli, ["export", *map(str, args)])


def one_line(result, *fragments) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_state(out, data) -> object:
    path = out / STATE_DIR / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("data, fragment", [
    ('{"version": 1, "files": {"a.gguf": {"fingerp', "not valid JSON"),
    ("[" * 100_000, "nested more than"),
    ("[]", "expected a JSON object, got list"),
    ({"version": 1, "files": [], "verify": {}}, "field 'files': expected an object"),
    ({"version": 1, "files": {"a.gguf": {**GOOD_RECORD, "sha256": 7}}, "verify": {}}, "field 'files.a.gguf.sha256'"),
    ({"version": 1, "files": {"a.gguf": "done"}, "verify": {}}, "field 'files.a.gguf.fingerprint'"),
])
def test_a_hand_edited_state_json_is_one_line(tmp_path, data, fragment):
    path = write_state(tmp_path, data)
    with pytest.raises(TmdError) as caught:
        ExportState(tmp_path)
    message = str(caught.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message
    assert "delete it to redo" in message


def test_good_other_version_and_missing_state_json_read(tmp_path):
    write_state(tmp_path, {"version": 1, "files": {"a.gguf": GOOD_RECORD}, "verify": {}})
    assert ExportState(tmp_path).files["a.gguf"]["size"] == 10
    write_state(tmp_path, {"version": 99, "whatever": True})  # another tmd's format: start clean
    assert ExportState(tmp_path).files == {}
    assert ExportState(tmp_path / "new").files == {}


def test_a_damaged_state_json_stops_the_cli_before_any_work(tmp_path, tiny_adapters, tiny_base):
    out = tmp_path / "bundle"
    write_state(out, '{"version": 1, "files": {')
    one_line(export_cli("--adapters", tiny_adapters, "--out", out, "--base", tiny_base, "--quant", "q8_0"),
             "state.json", "not valid JSON")
    assert not list(out.glob("*.gguf"))


@pytest.mark.parametrize("text", ['{"fingerprint": "x"', "[" * 100_000, '["fp"]', '"fp"', "\xff"])
def test_a_damaged_merge_marker_means_merge_again(tmp_path, text):
    from exporter.merge import MARKER, merged_is_current

    (tmp_path / MARKER).write_text(text, errors="surrogateescape")
    assert merged_is_current(tmp_path, "fp") is False
    (tmp_path / MARKER).write_text(json.dumps({"fingerprint": "fp"}))
    assert merged_is_current(tmp_path, "fp") is True


@pytest.mark.parametrize("name, text, fragment", [
    ("tmd.json", '{"module": "analyzer", "ba', "tmd.json: not valid JSON"),
    ("tmd.json", "[" * 100_000, "tmd.json: not valid JSON (nested"),
    ("tmd.json", '["analyzer"]', "tmd.json: expected a JSON object, got list"),
    ("adapter_config.json", '{"r": 4,', "adapter_config.json: not valid JSON"),
])
def test_damaged_adapter_files_are_one_line_through_the_cli(tmp_path, tiny_adapters, tiny_base, name, text, fragment):
    adapters = tmp_path / "adapters"
    shutil.copytree(tiny_adapters, adapters)
    (adapters / "analyzer" / name).write_text(text)
    one_line(export_cli("--adapters", adapters, "--out", tmp_path / "b", "--base", tiny_base), fragment)


def test_a_safetensors_header_nested_without_end_is_one_line(tmp_path):
    from exporter.adapters import _safetensors_shapes

    blob = b"[" * 100_000
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    with pytest.raises(TmdError, match=r"safetensors.*nested more than"):
        _safetensors_shapes(path)
    blob = json.dumps({"w": {"dtype": "F32"}}).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    with pytest.raises(TmdError, match="a header entry without a shape"):
        _safetensors_shapes(path)


@pytest.mark.parametrize("text", ['{"modules": {"analyzer": ', "[" * 100_000, '{"modules": ["analyzer"]}'])
def test_a_damaged_previous_manifest_keeps_nothing_and_says_so(tmp_path, text):
    from exporter.bundle import take_down_manifest

    (tmp_path / "manifest.json").write_text(text)
    work = tmp_path / STATE_DIR
    notes: list[str] = []
    assert take_down_manifest(tmp_path, work, set(), notes) == {}
    assert not (tmp_path / "manifest.json").exists()  # taken down all the same: the export rewrites it
    if not text.startswith('{"modules": ['):
        assert notes and "manifest.json" in notes[0] and "\n" not in notes[0]
