"""Issue #27: `tmd train` on a full disk (a file-size limit) stops with one line, leaving no
checkpoint that looks complete but is not; once space is back the same command resumes and ends
with the adapter of an uninterrupted run."""

from __future__ import annotations

import json
import os

import pytest

from disk_full_helpers import assert_one_line_disk_error, run_with_file_limit, tmd_command


@pytest.mark.slow
def test_train_on_a_full_disk_stops_with_one_line_and_the_rerun_finishes(tiny_base, tiny_config, teacher_dir,
                                                                        tmp_path):
    from safetensors.torch import load_file

    from trainer.train import train

    out = tmp_path / "run"
    cmd = tmd_command("train", "--module", "analyzer", "--data", teacher_dir, "--base", tiny_base, "--out", out,
                      "--no-progress", "--lr", "2e-3", "--max-steps", "4", "--save-every", "1", "--epochs", "1",
                      "--eval-fraction", "0.2", "--threads", "1")
    full = run_with_file_limit(cmd, 64 * 1024)  # the adapter fits, the optimizer state does not
    assert_one_line_disk_error(full)
    assert not (out / "tmd.json").exists()
    # the first checkpoint could not be written whole: nothing named step-* (what resume trusts)
    assert not list((out / "checkpoints").glob("step-*"))
    again = run_with_file_limit(cmd, None)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
    straight = tmp_path / "straight"
    train(tiny_config(teacher_dir, straight, max_steps=4, epochs=1, save_every=1, lora_dropout=0.1, grad_accum=4,
                      batch_size=2, eval_fraction=0.2, lr=2e-3, max_length=512, seed=0, threads=1))
    a, b = (load_file(str(p / "adapter_model.safetensors")) for p in (straight, out))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert not [p for p in os.listdir(out) if p.endswith(".partial")]
