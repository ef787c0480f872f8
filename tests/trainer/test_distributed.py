"""Training on several ranks (torch.distributed, gloo on CPU) on the tiny random Llama: the same
adapter as one process on the same global batch, a killed rank resumed to the same adapter, how a
step is dealt out, and --nproc's one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from trainer.distributed import Ranks, passes_per_rank, rank_share


def adapter_weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def invoke(*args):
    from click.testing import CliRunner

    from tmd_local.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_step_is_dealt_out_whole_micro_batches_first():
    window = [[0, 1], [2, 3], [4, 5]]
    assert rank_share(window, Ranks(0, 2)) == [(0, [0, 1]), (2, [4, 5])]
    assert rank_share(window, Ranks(1, 2)) == [(1, [2, 3])]
    assert passes_per_rank(window, 2) == 2  # rank 1 adds a pass that counts zero
    # fewer micro-batches than ranks: the examples are dealt one by one
    assert rank_share([[7, 8]], Ranks(0, 2)) == [(0, [7])]
    assert rank_share([[7, 8]], Ranks(1, 2)) == [(1, [8])]
    assert rank_share([[7]], Ranks(1, 2)) == [] and passes_per_rank([[7]], 2) == 1
    assert rank_share(window, Ranks()) == list(enumerate(window))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_two_ranks_train_the_adapter_of_one_process(tiny_config, teacher_dir, tmp_path):
    """One epoch (windows of 2, 2 and 1 micro-batches: the last one is split by examples) with
    2 ranks x 1 thread vs 1 process: the same losses, tokens and adapter. Tolerance: weights within
    1e-5 (lr 2e-3; only the order of fp32 additions differs: DDP sums the ranks' gradients).
    Dropout is off: a micro-batch split between ranks draws other dropout masks."""
    from trainer.distributed import launch
    from trainer.train import train, train_rank

    common = dict(epochs=1, grad_accum=2, lora_dropout=0.0, save_every=0, threads=1)
    single = train(tiny_config(teacher_dir, tmp_path / "single", **common)).metrics
    launch(2, train_rank, tiny_config(teacher_dir, tmp_path / "ranks", **common), None, False)
    ranked = json.loads((tmp_path / "ranks" / "metrics.json").read_text())

    assert ranked["ranks"] == 2 and len(ranked["peak_rss_mb_per_rank"]) == 2 and single["ranks"] == 1
    assert ranked["steps"] == single["steps"] == 3
    assert ranked["tokens_trained"] == single["tokens_trained"]
    assert ranked["target_tokens_trained"] == single["target_tokens_trained"]
    assert ([s["loss"] for s in ranked["loss_per_step"]]
            == pytest.approx([s["loss"] for s in single["loss_per_step"]], abs=1e-5))
    assert ranked["eval_loss"] == pytest.approx(single["eval_loss"], abs=1e-5)
    a, b = adapter_weights(tmp_path / "single"), adapter_weights(tmp_path / "ranks")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert max(a[k].abs().max().item() for k in a) > 1e-2  # the weights did move
    tmd = json.loads((tmp_path / "ranks" / "tmd.json").read_text())
    assert tmd["hyperparameters"]["ranks"] == 2 and tmd["hyperparameters"]["precision"] == "fp32"
    assert not (tmp_path / "ranks" / "checkpoints").exists()


@pytest.mark.slow
def test_a_killed_rank_resumes_to_the_adapter_of_an_uninterrupted_run(tiny_base, teacher_dir, tmp_path):
    """`tmd train --nproc 2`, rank 1 SIGKILLed after step 3's checkpoint: one line says so, the
    same command resumes from rank 0's checkpoint and ends with the uninterrupted run's weights
    (dropout on: each micro-batch's masks depend on its step and place, not on the process)."""
    import psutil

    args = ("--max-steps", "8", "--epochs", "2", "--save-every", "1", "--eval-fraction", "0.2",
            "--module", "informant", "--nproc", "2", "--threads", "1")
    straight = _ranks_command(tiny_base, teacher_dir, tmp_path / "straight", *args)
    assert subprocess.run(straight, capture_output=True, text=True).returncode == 0

    out = tmp_path / "killed"
    cmd = _ranks_command(tiny_base, teacher_dir, out, *args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (out / "checkpoints" / "step-000003").is_dir():
        time.sleep(0.05)
    ranks = {p.name(): p for p in psutil.Process(proc.pid).children(recursive=True)}
    ranks["tmd-rank-1"].send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "rank 1 was killed by SIGKILL" in errors[0], stderr
    assert not (out / "tmd.json").exists(), "the run finished before it could be killed"

    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming from step-0000" in done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] >= 3 and metrics["sessions"] == 2 and metrics["ranks"] == 2
    a, b = adapter_weights(tmp_path / "straight"), adapter_weights(out)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def _ranks_command(tiny_base, teacher_dir, out, *extra) -> list[str]:
    return [sys.executable, "-c", "from tmd_local.cli import main; main()", "train", "--data", str(teacher_dir),
            "--base", str(tiny_base), "--out", str(out), "--no-progress", "--lr", "2e-3", *extra]


@pytest.mark.parametrize("args, message", [
    (["--nproc", "0"], "--nproc 0: expected a positive number"),
    (["--nproc", "-2"], "--nproc -2: expected a positive number"),
    (["--nproc", "lots"], "--nproc lots: expected a positive number"),
    (["--nproc", "4096"], "--nproc 4096: expected at most"),
    (["--nproc", "2", "--device", "cuda"], "--device cuda: no CUDA device is available here"),
])
def test_nproc_errors_are_one_line(teacher_dir, workdir, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = invoke("train", "--module", "analyzer", "--data", str(teacher_dir), *args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.output


def test_nproc_under_torchrun_is_one_line(teacher_dir, workdir, monkeypatch):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setitem(os.environ, name, value)
    result = invoke("train", "--module", "analyzer", "--data", str(teacher_dir), "--nproc", "2")
    assert result.exit_code == 1
    assert "give the ranks to torchrun, not --nproc" in result.output.strip().splitlines()[0]
