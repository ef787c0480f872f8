"""Training end to end on a tiny random Llama: outputs, loss masking, resume equivalence, CLI errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tmd_local.core.errors import TmdError


class Killed(Exception):
    """Stands in for a kill: raised from the step hook, it ends the run without any cleanup."""


def adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_run_writes_a_peft_adapter_metrics_and_tmd_json_last(tiny_config, teacher_dir, tmp_path):
    from trainer.train import train

    out = tmp_path / "adapters" / "analyzer"
    result = train(tiny_config(teacher_dir, out, epochs=2, save_every=0))
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "metrics.json", "loss.png", "tmd.json"} <= names
    assert "checkpoints" not in names  # removed once the run is finished
    tmd = json.loads((out / "tmd.json").read_text())
    assert set(tmd) == {"module", "base", "base_source", "teacher", "data", "data_sha256",
                        "hyperparameters", "training", "tmd_version", "prompt_version"}
    assert tmd["training"]["steps"] == result.metrics["steps"] and tmd["training"]["epochs"] == 2
    assert tmd["module"] == "analyzer" and tmd["teacher"] == "gold" and len(tmd["data_sha256"]) == 64
    assert tmd["data"].endswith("analyzer.jsonl")
    assert tmd["prompt_version"] == "paper-appendix-a/letters-v1"
    hp = tmd["hyperparameters"]
    assert hp["lora_r"] == 16 and hp["lora_alpha"] == 8 and hp["epochs"] == 2 and hp["precision"] == "fp32"
    assert hp["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # tmd.json is written after everything else
    assert (out / "tmd.json").stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in out.iterdir())
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 16

    m = json.loads((out / "metrics.json").read_text())
    # 12 questions, 20% held out -> 3 questions held out, 9 trained: 5 batches of 2 -> 3 steps/epoch
    assert m["examples"]["train"] == 9 and m["examples"]["eval"] == 3
    assert m["steps"] == 6 == len(m["loss_per_step"]) and m["total_steps"] == 6
    assert [e["step"] for e in m["eval"]] == [0, 3, 6]
    assert m["tokens_trained"] > 0 and m["wall_seconds"] > 0 and m["peak_rss_mb"] > 50
    assert 0 <= m["padded_token_ratio"] < m["padded_token_ratio_pad_to_max"]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert result.metrics["final_loss"] == m["final_loss"]

    # the adapter loads with plain peft onto the base
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tmd["base_source"])
    PeftModel.from_pretrained(base, str(out))


def test_progress_bar_counts_every_step_and_is_stopped(tiny_config, teacher_dir, tmp_path):
    import io

    from rich.console import Console

    from trainer.train import train

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    train(tiny_config(teacher_dir, tmp_path / "analyzer", epochs=2, save_every=0, progress=True),
          console=console)
    text = screen.getvalue()
    assert "6/6" in text and "tok/s" in text  # 2 epochs x 3 steps, all on the bar
    assert console._live_stack == []  # the live display was stopped; the console prints normally again


def test_loss_ignores_padding_and_prompt(tiny_base, teacher_dir, tokenizer):
    """The summed target loss of an example is the same alone, batched with a longer one, padded
    to 512, and with the head applied to the kept positions only or to all of them."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.data import build_examples, collate, load_records
    from trainer.loss import target_loss_sum

    model = AutoModelForCausalLM.from_pretrained(str(tiny_base)).eval()
    records = load_records(teacher_dir / "drd.jsonl", "drd")[:2]
    examples, _ = build_examples(records, tokenizer, 512)
    short, long = sorted(examples, key=len)
    cpu = torch.device("cpu")
    with torch.no_grad():
        alone = target_loss_sum(model, collate([short], 2), cpu).item()
        other = target_loss_sum(model, collate([long], 2), cpu).item()
        together = target_loss_sum(model, collate([short, long], 2), cpu).item()
        padded = target_loss_sum(model, collate([short, long], 2, pad_to=512), cpu).item()
        full_head = target_loss_sum(model, collate([short, long], 2), cpu, keep_ok=False).item()
        chunked = target_loss_sum(model, collate([short, long], 2, pad_to=512), cpu, chunked=True).item()
    assert together == pytest.approx(alone + other, rel=1e-4)
    assert padded == pytest.approx(together, rel=1e-4)
    assert full_head == pytest.approx(together, rel=1e-4)
    assert chunked == pytest.approx(together, rel=1e-4)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_chunked_head_loss_has_the_gradient_of_plain_cross_entropy(tiny_base, teacher_dir, tokenizer,
                                                                    monkeypatch):
    """_HeadLoss takes its gradient in the forward pass, slice by slice (slices of 7 rows here, so
    several slices and a short last one): the LoRA weights' gradients must be cross_entropy's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import trainer.loss as tl
    from trainer.data import build_examples, collate, load_records

    monkeypatch.setattr(tl, "LOSS_CHUNK", 7)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_base))
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "down_proj"],
                      init_lora_weights=False)  # B != 0, so gradients reach every LoRA matrix
    model = get_peft_model(base, lora)
    assert tl.supports_chunked_loss(model)
    examples, _ = build_examples(load_records(teacher_dir / "drd.jsonl", "drd")[:3], tokenizer, 512)
    batch = collate(examples, 2)
    cpu = torch.device("cpu")

    def loss_and_grads(chunked: bool):
        model.zero_grad()
        loss = tl.target_loss_sum(model, batch, cpu, keep_ok=True, chunked=chunked)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, plain_grads = loss_and_grads(False)
    chunked, chunked_grads = loss_and_grads(True)
    assert chunked == pytest.approx(plain, rel=1e-5)
    assert plain_grads.keys() == chunked_grads.keys() and len(plain_grads) == 8
    for name, g in plain_grads.items():
        assert g.abs().max() > 0, name
        # fp32 sums in another order: equal to 1e-4 of the gradient's largest entry
        assert (chunked_grads[name] - g).abs().max() <= 1e-4 * g.abs().max(), name


def test_auto_precision_reads_the_cpu_flags(tiny_config, teacher_dir, tmp_path, monkeypatch):
    """auto: bf16 where the CPU has bf16 units (AVX512-BF16 or AMX), fp32 elsewhere."""
    import trainer.device as td

    assert td.cpu_has_bf16_units({"avx2", "avx512f", "avx512_bf16"})
    assert td.cpu_has_bf16_units({"amx_tile", "amx_bf16"})
    assert not td.cpu_has_bf16_units({"avx2", "avx512f", "avx512_vnni"})
    cfg = tiny_config(teacher_dir, tmp_path / "o", precision="auto")
    monkeypatch.setattr(td, "cpu_flags", lambda: {"avx2"})
    assert td.pick_device(cfg)[1] == "fp32"
    monkeypatch.setattr(td, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert td.pick_device(cfg)[1] == "bf16"


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_bf16_keeps_the_base_in_bf16_and_lora_and_adam_in_fp32(tiny_config, teacher_dir, tmp_path):
    import torch

    from tmd_local.core.hf_base import ensure_hf_base
    from trainer.model import load_model
    from trainer.train import train

    cfg = tiny_config(teacher_dir, tmp_path / "bf16", precision="bf16", max_steps=2)
    model, _ = load_model(cfg, ensure_hf_base(cfg.base), torch.device("cpu"), "bf16")
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}

    result = train(cfg)
    assert result.metrics["precision"] == "bf16" and result.metrics["chunked_loss"] is True
    tmd = json.loads((tmp_path / "bf16" / "tmd.json").read_text())
    assert tmd["hyperparameters"]["precision"] == "bf16"
    assert all(w.dtype == torch.float32 for w in adapter_weights(tmp_path / "bf16").values())
    fp32 = train(tiny_config(teacher_dir, tmp_path / "fp32", precision="fp32", max_steps=2)).metrics
    assert result.metrics["eval_loss"] == pytest.approx(fp32["eval_loss"], abs=0.05)


def test_resumed_run_matches_uninterrupted_run(tiny_config, teacher_dir, tmp_path):
    """Train 8 steps straight (4 an epoch); then the same run killed twice, each time after the
    step following a mid-epoch checkpoint (kept at steps 3 and 6), and resumed: the same loss at
    every step, the same final weights."""
    from trainer.train import train

    common = dict(module="informant", max_steps=8, epochs=2, save_every=3, lora_dropout=0.1)
    straight = train(tiny_config(teacher_dir, tmp_path / "straight", **common))
    assert straight.metrics["total_steps"] == 8 and len(straight.metrics["eval"]) == 3  # 4 steps/epoch

    out = tmp_path / "interrupted"
    with pytest.raises(Killed):
        train(tiny_config(teacher_dir, out, **common), on_step=_raise_at(4))
    # step 3 (periodic) and step 4 (epoch end) were saved; drop the epoch-end one so the resume
    # starts inside an epoch, from its recorded batch order
    import shutil
    shutil.rmtree(out / "checkpoints" / "step-000004")
    with pytest.raises(Killed):
        train(tiny_config(teacher_dir, out, **common), on_step=_raise_at(7))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000004", "step-000006"]
    assert not (out / "tmd.json").exists()
    resumed = train(tiny_config(teacher_dir, out, **common))
    assert resumed.resumed_from == 6

    a, b = straight.metrics, resumed.metrics
    assert [s["loss"] for s in b["loss_per_step"]] == pytest.approx([s["loss"] for s in a["loss_per_step"]],
                                                                     abs=1e-5)
    assert b["steps"] == a["steps"] == 8 and b["tokens_trained"] == a["tokens_trained"]
    assert b["eval_loss"] == pytest.approx(a["eval_loss"], abs=1e-5)
    wa, wb = adapter_weights(tmp_path / "straight"), adapter_weights(out)
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    assert b["sessions"] == 3


def test_finished_run_is_not_redone_and_checkpoint_mismatch_is_an_error(tiny_config, teacher_dir, tmp_path):
    from trainer.train import train

    out = tmp_path / "a"
    train(tiny_config(teacher_dir, out, max_steps=2))
    again = train(tiny_config(teacher_dir, out, max_steps=2))
    assert again.skipped
    with pytest.raises(TmdError, match=r"holds a finished run with other settings \(lr="):
        train(tiny_config(teacher_dir, out, max_steps=2, lr=1e-3))
    fresh = train(tiny_config(teacher_dir, out, max_steps=2, lr=1e-3), fresh=True)
    assert not fresh.skipped

    out2 = tmp_path / "b"

    def stop(state):
        raise Killed

    with pytest.raises(Killed):
        train(tiny_config(teacher_dir, out2, max_steps=4, save_every=1), on_step=stop)
    with pytest.raises(TmdError, match=r"step-000001: made with lr=0\.002, this run has lr=0\.001"):
        train(tiny_config(teacher_dir, out2, max_steps=4, save_every=1, lr=1e-3))
    with pytest.raises(TmdError, match="--resume given but there is no checkpoint"):
        train(tiny_config(teacher_dir, tmp_path / "c", max_steps=1), resume=True)


def test_timed_checkpoints_and_a_polite_kill_lose_no_step(tiny_config, teacher_dir, tmp_path):
    """--save-minutes checkpoints between the step-count ones; SIGTERM checkpoints the step under
    way and stops with one clear error, puts the old handler back, and the rerun resumes there."""
    from trainer.train import train

    out = tmp_path / "timed"
    common = dict(max_steps=6, epochs=3, save_every=0, lora_dropout=0.1)
    with pytest.raises(Killed):
        train(tiny_config(teacher_dir, out, save_minutes=1e-9, **common), on_step=_raise_at(3))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000003"]

    before = signal.getsignal(signal.SIGTERM)
    polite = tmp_path / "polite"

    def term_at_2(state):
        if state.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # lands mid-run; the loop finishes step 3 first

    with pytest.raises(TmdError, match=r"stopped by SIGTERM at step 3/6; checkpoint .*step-000003 saved"):
        train(tiny_config(teacher_dir, polite, **common), on_step=term_at_2)
    assert signal.getsignal(signal.SIGTERM) is before
    assert not (polite / "tmd.json").exists()
    resumed = train(tiny_config(teacher_dir, polite, **common))
    assert resumed.resumed_from == 3 and resumed.metrics["steps"] == 6
    straight = train(tiny_config(teacher_dir, tmp_path / "straight", **common))
    a, b = adapter_weights(tmp_path / "straight"), adapter_weights(polite)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert straight.metrics["steps"] == 6


def _raise_at(step):
    def hook(state):
        if state.step == step:
            raise Killed
    return hook


def invoke(*args):
    from tmd_local.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("args, message", [
    (["--module", "analyzer", "--data", "{t}", "--base", "/nonexistent/base"],
     "base '/nonexistent/base': expected a Hugging Face model folder"),
    (["--module", "analyzer", "--data", "{t}/../missing"], "analyzer.jsonl: no such file"),
    (["--data", "{t}"], "give exactly one of --module <name> or --all"),
    (["--module", "drd", "--all", "--data", "{t}"], "give exactly one of --module <name> or --all"),
    (["--module", "analyzer", "--data", "{t}", "--lora-r", "0"], "training config: lora_r=0: expected"),
    (["--module", "analyzer", "--data", "{t}/empty.jsonl"], "empty.jsonl: no training examples"),
    (["--module", "analyzer", "--data", "{t}", "--resume", "--fresh"], "--resume and --fresh contradict"),
    (["--all", "--data", "{t}/empty.jsonl"], "with --all, give the teacher run folder"),
])
def test_cli_errors_are_one_line(teacher_dir, workdir, args, message):
    (teacher_dir / "empty.jsonl").write_text("")
    result = invoke("train", *[a.replace("{t}", str(teacher_dir)) for a in args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.output


def test_cli_all_trains_four_modules(tiny_base, teacher_dir, workdir):
    result = invoke("train", "--all", "--data", str(teacher_dir), "--base", str(tiny_base), "--out", "ad",
                    "--max-steps", "1", "--eval-fraction", "0", "--no-progress", "--lr", "1e-3")
    assert result.exit_code == 0, result.output
    for module in ("analyzer", "informant", "reasoner", "drd"):
        tmd = json.loads((workdir / "ad" / module / "tmd.json").read_text())
        assert tmd["module"] == module and tmd["hyperparameters"]["lr"] == 1e-3
        assert tmd["hyperparameters"]["max_steps"] == 1


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_adapter(tiny_base, tiny_config, teacher_dir, tmp_path):
    """A real SIGKILL of `tmd train` mid-run, then the same command again: it resumes from the last
    checkpoint and ends with the weights of an uninterrupted run."""
    from trainer.train import train

    out = tmp_path / "killed"
    cmd, env = _train_command(tiny_base, teacher_dir, out, "--max-steps", "16", "--epochs", "4",
                              "--save-every", "1", "--eval-fraction", "0.2", "--threads", "2")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(out, "step-000003")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "tmd.json").exists(), "the run finished before it could be killed"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming from step-0000" in done.stderr
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] >= 3

    # the same settings, uninterrupted, in this process (the CLI's defaults are TrainConfig's)
    straight = tmp_path / "straight"
    train(tiny_config(teacher_dir, straight, max_steps=16, epochs=4, save_every=1, lora_dropout=0.1,
                      grad_accum=4, batch_size=2, eval_fraction=0.2, lr=2e-3, max_length=512, seed=0))
    a, b = adapter_weights(straight), adapter_weights(out)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.slow
def test_sigterm_to_the_process_saves_its_step_and_exits_with_one_line(tiny_base, teacher_dir, tmp_path):
    """`kill <pid>` of a real `tmd train`: it checkpoints the step under way, exits 1 with a one-line
    message, and the same command then resumes from that very step."""
    out = tmp_path / "termed"
    cmd, env = _train_command(tiny_base, teacher_dir, out, "--max-steps", "20", "--epochs", "5",
                              "--save-every", "1000", "--eval-fraction", "0", "--threads", "1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(out, "step-*")  # the first epoch end's: the loop is running
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    error = [line for line in (stdout + stderr).splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "stopped by SIGTERM at step" in error[0], stdout + stderr
    stopped_at = int(error[0].split("at step ")[1].split("/")[0])
    # without a progress bar, each checkpoint logs a status line
    assert re.search(r"analyzer: step \d+/20 \(epoch [\d.]+\), loss [\d.]+, \d+ tok/s, ETA \d+h\d\dm, "
                     r"saved step-0000\d\d", stderr), stderr
    assert 1 <= stopped_at < 20
    assert (out / "checkpoints" / f"step-{stopped_at:06d}").is_dir()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == stopped_at


def _train_command(tiny_base, teacher_dir, out, *extra) -> tuple[list[str], dict]:
    """`tmd train` of the tiny analyzer as a real process (argv, environment)."""
    args = ["--module", "analyzer", "--data", str(teacher_dir), "--base", str(tiny_base), "--out", str(out),
            "--no-progress", "--lr", "2e-3", *extra]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    return [sys.executable, "-c", "from tmd_local.cli import main; main()", "train", *args], env


def _wait_for_checkpoint(out, pattern: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not list((out / "checkpoints").glob(pattern)):
        time.sleep(0.05)


def test_base_without_tokenizer_is_one_clear_error(tiny_config, tiny_base, teacher_dir, tmp_path):
    from trainer.train import train

    broken = tmp_path / "broken-base"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_base / "config.json").read_text())
    with pytest.raises(TmdError, match=r"base '.*broken-base': cannot load its tokenizer"):
        train(tiny_config(teacher_dir, tmp_path / "o", base=str(broken), max_steps=1))


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_activation_checkpointing_trains_the_same_adapter(tiny_config, teacher_dir, tmp_path):
    """Recomputing each layer in backward replays its dropout draws: the same weights as keeping
    the activations, and the setting is recorded."""
    from trainer.train import train

    common = dict(max_steps=3, lora_dropout=0.1, save_every=0)
    train(tiny_config(teacher_dir, tmp_path / "kept", **common))
    train(tiny_config(teacher_dir, tmp_path / "recomputed", activation_checkpointing=True, **common))
    a, b = adapter_weights(tmp_path / "kept"), adapter_weights(tmp_path / "recomputed")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    tmd = json.loads((tmp_path / "recomputed" / "tmd.json").read_text())
    assert tmd["hyperparameters"]["activation_checkpointing"] is True
