"""Issue #27: `tmd export` as a real process on a full disk (a file-size limit: the merged model
cannot be written) stops with one line and leaves no manifest; once space is back the same command
finishes with a bundle whose every file matches its sha256. (test_export_tiny.py simulates ENOSPC
in-process inside quantize; this is the kernel refusing the write.)"""

from __future__ import annotations

import pytest

from disk_full_helpers import assert_one_line_disk_error, run_with_file_limit, tmd_command
from exporter import bundle as B


@pytest.mark.slow
def test_export_on_a_full_disk_stops_with_one_line_and_the_rerun_finishes(tiny_adapters, tiny_base, converter,
                                                                         tmp_path):
    out = tmp_path / "bundle"
    cmd = tmd_command("export", "--adapters", tiny_adapters, "--out", out, "--base", tiny_base, "--quant",
                      "f16,q8_0", "--no-verify", "--threads", "1")
    assert_one_line_disk_error(run_with_file_limit(cmd, 4 * 1024 * 1024))  # the merged model is ~13 MB
    assert not (out / "manifest.json").exists() and not list(out.glob("*.gguf"))
    again = run_with_file_limit(cmd, None)
    assert again.returncode == 0, again.stderr[-2000:]
    bundle = B.read_manifest(out, check="sha256")
    assert set(bundle.roles["analyzer"].files) == {"f16", "q8_0"}
    assert not list(out.glob(".*.partial")) and not list(out.glob("merged/*.partial"))
