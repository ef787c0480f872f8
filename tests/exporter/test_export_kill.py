"""Issue #27: `tmd export` killed with SIGKILL in the middle of merging, converting and quantizing
(one kill in each, each rerun going further), then run to the end. After every kill the folder
holds no manifest, or one whose every file is complete and matches its sha256; the final run skips
what was finished before the kills and ends with a manifest that passes the sha256 check.
(tests/exporter/test_export_tiny.py interrupts quantize in-process; this is a real process kill.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter import bundle as B
from exporter.export import ExportOptions, Reporter, export
from exporter.state import ExportState

PHASES = [("merge", "merged/analyzer.partial"), ("convert", ".tmd-export/work/analyzer.f16.converter.partial"),
          ("quantize", ".analyzer.q8_0.gguf.partial")]  # the scratch names each step writes first


class Recorder(Reporter):
    def __init__(self):
        self.finished = []

    def step_finished(self, label, seconds, cached):
        self.finished.append((label, cached))


def _kill_during(cmd, env, out: Path, pattern: str) -> bool:
    """Start the export and SIGKILL it the moment `pattern` appears in `out` (False: it ended first)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(out.glob(pattern)):
        time.sleep(0.005)
    seen = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return seen


def _manifest_is_absent_or_true(out: Path) -> None:
    if (out / "manifest.json").exists():
        B.read_manifest(out, check="sha256")  # raises TmdError naming any file that is not as listed


@pytest.mark.slow
def test_killed_in_merge_convert_and_quantize_it_resumes_and_never_ships_a_bad_file(tiny_adapters, tiny_base,
                                                                                   converter, tmp_path):
    out = tmp_path / "bundle"
    args = ["export", "--adapters", str(tiny_adapters), "--out", str(out), "--base", str(tiny_base),
            "--quant", "f16,q8_0", "--mode", "merged", "--no-verify", "--threads", "1"]
    cmd = [sys.executable, "-c", "from tmd_local.cli import main; main()", *args]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    for phase, pattern in PHASES:
        assert _kill_during(cmd, env, out, pattern), f"the export ended before it reached {phase}"
        _manifest_is_absent_or_true(out)
    finished = set(ExportState(out).files)  # what the killed runs recorded as complete
    assert "analyzer.f16.gguf" in finished, finished  # converted before the quantize kill
    rec = Recorder()
    export(ExportOptions(adapters=tiny_adapters, out=out, quants=["f16", "q8_0"], mode="merged", threads=1,
                         base=str(tiny_base), verify=False), rec)
    # Every file state.json recorded as finished before the last kill is skipped; only the rest is made.
    for label, was_cached in rec.finished:
        target = label.rsplit(" ", 1)[-1]
        if target in finished:
            assert was_cached, (label, rec.finished)
    redone = [label for label, was_cached in rec.finished if not was_cached and not label.startswith("setup:")]
    assert redone and all(": quantize " in label or ": convert " in label for label in redone), rec.finished
    assert not any(": merge " in label for label in redone)  # merged before the convert kill
    bundle = B.read_manifest(out, check="sha256")
    assert set(bundle.roles["analyzer"].files) == {"f16", "q8_0"}
    assert not list(out.glob(".*.partial")) and not list(out.glob("merged/*.partial"))
