"""LoRA on the real embedded student (SmolLM2-135M-Instruct, dequantized): a few dozen steps on a
fixed small set must bring the training loss down clearly."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_real_model_training_loss_falls_by_a_third(hf_base, teacher_dir, tmp_path):
    from trainer.config import TrainConfig
    from trainer.train import train

    # 8 Informant examples (short prompts) -> 4 steps an epoch at batch 2, no accumulation
    lines = (teacher_dir / "informant.jsonl").read_text().splitlines()[:8]
    data = tmp_path / "informant.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cfg = TrainConfig(module="informant", data=data, out=tmp_path / "out", base=str(hf_base), lr=1e-3,
                      epochs=6, batch_size=2, grad_accum=1, eval_fraction=0.0, save_every=0,
                      device="cpu", precision="fp32", progress=False)
    result = train(cfg)
    losses = [s["loss"] for s in result.metrics["loss_per_step"]]
    assert len(losses) == 24
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4  # one epoch each: the same examples
    assert last < first * 2 / 3, f"loss did not fall by a third: {first:.3f} -> {last:.3f} ({losses})"
