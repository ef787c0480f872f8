"""Issue #27: a checkpoint folder is data, never code. Every part loads with torch's weights-only
loader, so a planted pickle is refused before it runs; a truncated or hand-edited part, state.json,
tmd.json or metrics.json is one line naming the file (and field), never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tmd_local.core.errors import TmdError


class Stop(Exception):
    """Ends a run from the step hook, as a kill would (no cleanup)."""


class PlantedPayload:
    """What an attacker puts in rng.pt: unpickling it would run `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def checkpointed(tiny_config, teacher_dir, tmp_path):
    """A run stopped after step 2 with checkpoints at steps 1 and 2; returns (make_config, latest)."""
    from trainer.train import train

    def make(**changes):
        return tiny_config(teacher_dir, tmp_path / "run", max_steps=4, save_every=1, **changes)

    def stop_at_2(state):
        if state.step == 2:
            raise Stop

    with pytest.raises(Stop):
        train(make(), on_step=stop_at_2)
    return make, tmp_path / "run" / "checkpoints" / "step-000002"


def _resume_error(make) -> str:
    from trainer.train import train

    with pytest.raises(TmdError) as caught:
        train(make())
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_planted_pickle_in_rng_pt_is_refused_and_never_runs(checkpointed, tmp_path):
    import torch

    make, latest = checkpointed
    marker = tmp_path / "pwned"
    torch.save({"torch": torch.get_rng_state(), "python": PlantedPayload(marker)}, latest / "rng.pt")
    message = _resume_error(make)
    assert message.startswith(f"{latest / 'rng.pt'}: refused, not a weights-only checkpoint file")
    assert "posix.system" in message and "--fresh" in message
    assert not marker.exists(), "the planted pickle ran"


def test_a_planted_pickle_in_the_optimizer_state_is_refused_through_the_cli(checkpointed, tiny_base,
                                                                            teacher_dir, tmp_path):
    import torch

    make, latest = checkpointed
    marker = tmp_path / "pwned"
    torch.save({"state": {}, "param_groups": [], "x": PlantedPayload(marker)}, latest / "optimizer.pt")
    from tmd_local.cli import cli

    result = CliRunner().invoke(cli, ["train", "--module", "analyzer", "--data", str(teacher_dir),
                                      "--base", str(tiny_base), "--out", str(tmp_path / "run"), "--no-progress",
                                      "--max-steps", "4", "--save-every", "1", "--lr", "2e-3",
                                      "--threads", "2", "--batch-size", "2", "--grad-accum", "2",
                                      "--eval-fraction", "0.2", "--device", "cpu", "--precision", "fp32",
                                      "--epochs", "1"],
                           catch_exceptions=False)
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "optimizer.pt: refused" in lines[0] and "Traceback" not in result.output
    assert not marker.exists()


def test_the_saved_rng_state_still_resumes(checkpointed):
    """The format written today loads weights-only (tensors, ints, tuples): resuming works."""
    from trainer.train import train

    make, _ = checkpointed
    resumed = train(make())
    assert resumed.resumed_from == 2 and resumed.metrics["steps"] == 4


@pytest.mark.parametrize("part, damage, fragment", [
    ("rng.pt", b"PK\x03\x04 not really", "cannot be read as a torch checkpoint file"),
    ("optimizer.pt", None, "cannot be read as a torch checkpoint file"),  # truncated to half
    ("scheduler.pt", "delete", "missing; the checkpoint is incomplete"),
    ("adapter_model.safetensors", None, "adapter_model.safetensors: cannot be read"),
])
def test_a_damaged_part_is_one_line(checkpointed, part, damage, fragment):
    make, latest = checkpointed
    file = latest / part
    if damage == "delete":
        file.unlink()
    else:
        file.write_bytes(damage if damage is not None else file.read_bytes()[: file.stat().st_size // 2])
    message = _resume_error(make)
    assert message.startswith(str(file)) and fragment in message


def test_rng_pt_of_the_wrong_shape_is_one_line(checkpointed):
    import torch

    make, latest = checkpointed
    torch.save({"torch": torch.zeros(3), "python": (3, (1, 2), None)}, latest / "rng.pt")
    message = _resume_error(make)
    assert message.startswith(f"{latest / 'rng.pt'}: does not fit this run")


@pytest.mark.parametrize("edit, fragment", [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: "[1, 2]", "expected a JSON object, got list"),
    (lambda text: json.dumps({**json.loads(text), "fingerprint": "lr=1"}), "field 'fingerprint': expected an object"),
    (lambda text: json.dumps({**json.loads(text), "state": {**json.loads(text)["state"], "step": "two"}}),
     "field 'state.step': expected a count >= 0"),
    (lambda text: json.dumps({**json.loads(text), "state": {**json.loads(text)["state"], "log": None}}),
     "field 'state.log': expected a list"),
])
def test_a_hand_edited_checkpoint_state_json_is_one_line(checkpointed, edit, fragment):
    make, latest = checkpointed
    state = latest / "state.json"
    state.write_text(edit(state.read_text()))
    message = _resume_error(make)
    assert message.startswith(str(state)) and fragment in message


@pytest.mark.parametrize("name, edit, fragment", [
    ("tmd.json", lambda text: text[:40], "not valid JSON"),
    ("tmd.json", lambda text: '"done"', "tmd.json"),
    ("metrics.json", lambda text: text[:40], "not valid JSON"),
    ("metrics.json", lambda text: "[]", "expected a JSON object"),
])
def test_a_hand_edited_finished_run_is_one_line_and_not_silently_retrained(tiny_config, teacher_dir, tmp_path,
                                                                          name, edit, fragment):
    from trainer.train import train

    config = tiny_config(teacher_dir, tmp_path / "done", max_steps=1)
    train(config)
    file = tmp_path / "done" / name
    file.write_text(edit(file.read_text()))
    adapter = (tmp_path / "done" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(TmdError) as caught:
        train(config)
    assert str(caught.value).startswith(str(file)) and fragment in str(caught.value)
    assert "\n" not in str(caught.value)
    assert (tmp_path / "done" / "adapter_model.safetensors").read_bytes() == adapter  # nothing redone
    assert not train(config, fresh=True).skipped  # --fresh, as the message says, trains again
