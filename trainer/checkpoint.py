"""Checkpoints that resume exactly: checkpoints/step-NNNNNN/ holds the adapter, optimizer,
scheduler, grad scaler, RNG states and the loop's state (LoopState); reading one back checks
every part, and refuses one made from other data or settings."""

from __future__ import annotations

import dataclasses
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tmd_local.core.errors import TmdError
from tmd_local.core.jsonl import read_json, write_json_atomic

from .data import Prepared

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"


# --- the loop's state: everything a checkpoint must carry besides tensors ---------------------

@dataclass
class LoopState:
    step: int = 0                       # optimizer steps done
    epoch: int = 0                      # current epoch (0-based)
    window: int = 0                     # next accumulation window within the epoch
    epoch_batches: list = field(default_factory=list)  # this epoch's batch order (example indices)
    log: list = field(default_factory=list)             # one entry per optimizer step
    evals: list = field(default_factory=list)           # held-out loss at step 0 and epoch ends
    tokens: int = 0                     # real (non-pad) tokens trained on
    target_tokens: int = 0
    slots: int = 0                      # token slots including padding
    train_seconds: float = 0.0          # time inside training steps (for tokens/s)
    wall_seconds: float = 0.0           # whole-run time over all sessions so far
    peak_rss_mb: float = 0.0
    sessions: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- the checkpoint folders ------------------------------------------------------------------

class Checkpoints:
    """checkpoints/step-NNNNNN/: adapter, optimizer, scheduler, scaler, RNG and state.json.

    Each is written to a .partial folder and renamed, so a folder without that suffix is complete."""

    def __init__(self, out: Path, keep: int):
        self.root = out / CHECKPOINTS
        self.keep = keep

    def latest(self) -> Path | None:
        if not self.root.is_dir():
            return None
        done = sorted(p for p in self.root.iterdir()
                      if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file())
        return done[-1] if done else None

    def save(self, model, optimizer, scheduler, scaler, state: LoopState, meta: dict) -> Path:
        final = self.root / f"step-{state.step:06d}"
        tmp = self.root / f".step-{state.step:06d}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        write_json_atomic(tmp / STATE_FILE, {**meta, "state": state.to_dict()})
        if final.exists():  # the epoch-end save of a step that was also a periodic save
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted(p for p in self.root.iterdir() if p.name.startswith("step-"))[:-self.keep]:
            shutil.rmtree(old)
        return final

    @staticmethod
    def read_meta(path: Path) -> dict:
        """state.json of a checkpoint, checked field by field: a hand-edited file is one line."""
        file = path / STATE_FILE
        meta = json_object(read_json(file, "checkpoint state file"), file)
        for key, kind, expected in (("fingerprint", dict, "an object"), ("data_sha256", str, "a string"),
                                    ("state", dict, "an object")):
            if not isinstance(meta.get(key), kind):
                raise TmdError(f"{file}: field '{key}': expected {expected}, got "
                               f"{type(meta.get(key)).__name__}; pass --fresh to start over")
        return meta

    @staticmethod
    def restore(path: Path, model, optimizer, scheduler, scaler) -> LoopState:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        try:
            weights = load_file(str(path / "adapter_model.safetensors"))
        except Exception as e:  # noqa: BLE001 - missing or truncated: one line, not a traceback
            raise TmdError(f"{path / 'adapter_model.safetensors'}: cannot be read ({_first_line(e)}); "
                           "pass --fresh to start over") from None
        result = set_peft_model_state_dict(model, weights)
        if getattr(result, "unexpected_keys", None):
            raise TmdError(f"{path}: checkpoint adapter does not match this model "
                           f"(unexpected {result.unexpected_keys[:3]}); rerun with --fresh")
        state = _loop_state(Checkpoints.read_meta(path)["state"], path / STATE_FILE)
        _apply(path / "optimizer.pt", optimizer.load_state_dict)
        _apply(path / "scheduler.pt", scheduler.load_state_dict)
        if scaler is not None and (path / "scaler.pt").is_file():
            _apply(path / "scaler.pt", scaler.load_state_dict)
        _apply(path / "rng.pt", _set_rng_states)
        return state


# Every checkpoint part is loaded with weights_only=True: torch then builds only tensors and plain
# containers, so a checkpoint folder from someone else cannot run code on load (a pickle's
# __reduce__ is refused before it is called). rng.pt holds tensors, ints and tuples: it qualifies.
def _load_part(file: Path):
    import pickle

    if not file.is_file():
        raise TmdError(f"{file}: missing; the checkpoint is incomplete, pass --fresh to start over")
    try:
        return torch.load(file, weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = re.search(r"GLOBAL (\S+)", str(e))  # torch names the callable it refused
        why = f"it would load {blocked.group(1)}" if blocked else "it holds more than tensors"
        raise TmdError(f"{file}: refused, not a weights-only checkpoint file ({why}); a checkpoint must "
                       "hold only tensors and plain values, pass --fresh to start over") from None
    except Exception as e:  # noqa: BLE001 - truncated or not a torch file at all: one line, not a traceback
        raise TmdError(f"{file}: cannot be read as a torch checkpoint file ({_first_line(e)}); "
                       "pass --fresh to start over") from None


def _apply(file: Path, load_state) -> None:
    """Load one part and hand it to its owner; a part of the wrong shape is one line too."""
    part = _load_part(file)
    try:
        load_state(part)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise TmdError(f"{file}: does not fit this run ({_first_line(e)}); pass --fresh to start over") from None


def _set_rng_states(rng) -> None:
    if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor):
        raise TypeError("expected {'torch': a ByteTensor, 'python': random.getstate()}")
    torch.set_rng_state(rng["torch"])
    random.setstate(tuple(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0][:160] if text else type(e).__name__)


def json_object(value, file: Path) -> dict:
    if not isinstance(value, dict):
        raise TmdError(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value


def _loop_state(saved: dict, file: Path) -> LoopState:
    """LoopState from a checkpoint's state.json: each count, number and list of the type its default
    has; a field the file lacks (a checkpoint from an older tmd) keeps its default."""
    kinds = {int: (int, "a count >= 0"), float: ((int, float), "a number"), list: (list, "a list")}
    values = {}
    for f in dataclasses.fields(LoopState):
        if f.name not in saved:
            continue
        value = saved[f.name]
        kind, expected = kinds.get(type(getattr(LoopState(), f.name)), (None, ""))
        if kind is not None and (isinstance(value, bool) or not isinstance(value, kind)
                                 or (kind is int and value < 0)):
            raise TmdError(f"{file}: field 'state.{f.name}': expected {expected}, got {value!r:.40}; "
                           "pass --fresh to start over")
        values[f.name] = value
    return LoopState(**values)


def checkpoint_to_resume(ckpts: Checkpoints, resume: bool | None, data: Prepared,
                         fingerprint: dict) -> Path | None:
    """The latest checkpoint, if this run may resume it: made from the same data and settings, and
    wanted (resume=None: if there is one; True: there must be one; False: there must be none)."""
    latest = ckpts.latest()
    if latest is not None and resume is False:
        raise TmdError(f"{ckpts.root.parent}: holds a checkpoint ({latest.name}); resume it (the default) "
                       "or pass --fresh")
    if latest is None:
        if resume is True:
            raise TmdError(f"{ckpts.root.parent}: --resume given but there is no checkpoint in {ckpts.root}")
        return None
    saved = Checkpoints.read_meta(latest)
    if saved.get("data_sha256") != data.data_sha256:
        raise TmdError(f"{latest}: made from other data than {data.data_file} (sha256 differs); "
                       "pass --fresh to start over")
    changed = [k for k in fingerprint if saved.get("fingerprint", {}).get(k) != fingerprint[k]]
    if changed:
        k = changed[0]
        raise TmdError(f"{latest}: made with {k}={saved['fingerprint'].get(k)!r}, this run has "
                       f"{k}={fingerprint[k]!r}; rerun with the checkpoint's settings or pass --fresh")
    return latest
