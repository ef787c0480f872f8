"""The training run: LoRA on one module's teacher set, a plain loop, checkpoints that resume exactly.

Reading order: `train()` at the bottom drives everything; `Run` holds the model, optimizer and
loop state; `Checkpoints` saves and restores it. One optimizer step = `grad_accum` micro-batches.
The loss of a step is the mean over the target tokens of all its micro-batches (each micro-batch's
summed token loss is divided by the step's target-token count before backward), so a step means
the same thing whatever the padding or the split into micro-batches.

Resuming: a checkpoint holds the adapter, optimizer, scheduler, grad scaler, RNG states, step,
epoch, the position in the epoch and that epoch's batch order. A resumed run continues with the
same batches and the same dropout draws, so it reaches the result of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import random
import re
import shutil
import signal
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# OpenMP threads that spin while waiting make a busy 2-core machine crawl (measured: a forward
# pass 6x slower when other processes share the cores). Sleep instead; this must be set before
# torch loads its OpenMP runtime, hence before the import below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tmd_local import __version__ as TMD_VERSION
from tmd_local.errors import TmdError
from tmd_local.formats import AdapterMeta
from tmd_local.hf_base import ensure_hf_base
from tmd_local.jsonl import read_json, write_json_atomic
from tmd_local.memory import peak_rss_mb
from tmd_local.prompts import PROMPT_VERSION
from tmd_local.registry import file_sha256

from .config import TrainConfig, default_target_modules
from .distributed import (Ranks, all_gather_floats, all_sum, available_cores, barrier, passes_per_rank,
                          rank_share)
from .distributed import current as current_ranks
from .data import (DataStats, Example, build_examples, collate, length_grouped_batches,
                   load_records, padding_ratio, split_heldout)

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
DONE_FILE = "tmd.json"


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


@dataclass
class Prepared:
    """The data side of a run, before any model is loaded."""
    data_file: Path
    data_sha256: str
    teacher: str
    prompt_version: str
    base_dir: Path
    tokenizer: object
    train: list[Example]
    eval: list[Example]
    stats: DataStats


# --- device, precision, threads -------------------------------------------------------------

def pick_device(cfg: TrainConfig, ranks: Ranks = Ranks()) -> tuple[torch.device, str]:
    """The device and the precision this run really uses (`auto` resolved the same way on the
    same machine every time, so a resumed run finds the precision its checkpoint recorded)."""
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise TmdError("training config: device='cuda': no CUDA device is available here")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and cuda)
    device = torch.device(f"cuda:{ranks.local_rank}" if use_cuda else "cpu")
    precision = cfg.precision
    if precision == "auto":
        if device.type == "cpu":
            precision = "bf16" if cpu_has_bf16_units() else "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise TmdError("training config: precision='fp16': needs CUDA (use fp32 or bf16 on CPU)")
    return device, precision


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16_units(flags: set[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), read from the kernel's
    CPU flags. torch has no query for it (torch.backends.cpu.get_cpu_capability() says AVX512, not
    which extensions), and without those units PyTorch emulates bf16 matmuls: on an AVX2-only VM
    a 1024x1024 bf16 matmul ran at 1 GFLOPS against fp32's 59, so `auto` must not pick bf16 there."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags, so fp32
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def set_threads(cfg: TrainConfig, ranks: Ranks = Ranks()) -> int:
    """One intra-op thread per core this process may use (shared out among the machine's ranks);
    one inter-op thread (the loop is serial)."""
    threads = cfg.threads or max(1, available_cores() // ranks.local_world)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (a second module under --all)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return threads


# glibc's malloc raises its mmap threshold each time a large block is freed, after which a freed
# activation tensor stays in the heap instead of going back to the system: a Reasoner step at
# batch 2 x 512 then peaked at 5.5 GB RSS instead of 3.5 (1.4 instead of 3.9 with activation
# checkpointing). A fixed threshold (M_MMAP_THRESHOLD, which also stops the raising) keeps every
# tensor of 1 MiB or more in its own mapping, returned when freed; the price is a page fault per
# page of every such tensor: 3 steps took 52 s instead of 40 (interleaved, shared cores). Hence
# opt-in (--low-memory).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def return_freed_memory() -> bool:
    """Have glibc give large freed blocks back to the system; False where that is not glibc."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def autocast_for(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --- data ------------------------------------------------------------------------------------

def prepare(cfg: TrainConfig, warn: Callable[[str], None] = lambda s: None) -> Prepared:
    from transformers import AutoTokenizer

    data_file = cfg.data_file()
    records = load_records(data_file, cfg.module)
    teachers = sorted({r.teacher for r in records})
    if len(teachers) > 1:
        warn(f"{data_file}: records from several teachers ({', '.join(teachers)}); recorded as one")
    versions = sorted({r.prompt_version for r in records})
    if versions != [PROMPT_VERSION]:
        warn(f"{data_file}: prompt_version {', '.join(versions) or '(none)'} differs from this tmd's "
             f"{PROMPT_VERSION}; the student will be prompted with the current prompts")
    base_dir = ensure_hf_base(cfg.base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    except (OSError, ValueError, KeyError) as e:
        raise TmdError(f"base '{cfg.base}': cannot load its tokenizer from {base_dir} "
                       f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    examples, stats = build_examples(records, tokenizer, cfg.max_length, cfg.truncation)
    if not examples:
        raise TmdError(f"{data_file}: no example fits max_length={cfg.max_length} (every target is "
                       f"longer than {cfg.max_length} tokens); raise --max-length")
    if stats.truncated or stats.dropped:
        warn(cut_examples_warning(data_file, stats, cfg.max_length, cfg.truncation))
    train_set, eval_set = split_heldout(examples, cfg.eval_fraction, cfg.seed)
    stats.train, stats.eval = len(train_set), len(eval_set)
    return Prepared(data_file, file_sha256(data_file), "+".join(teachers), "+".join(versions),
                    base_dir, tokenizer, train_set, eval_set, stats)


def cut_examples_warning(data_file: Path, stats: DataStats, max_length: int, truncation: str) -> str:
    """What --max-length cost this training set, and the length that keeps every example whole."""
    fits = -(-stats.longest_needed // 64) * 64  # rounded up to a multiple of 64
    parts = []
    if stats.truncated:
        lost = "middle" if truncation == "middle" else "start"
        parts.append(f"{stats.truncated} of {stats.records} prompts lose their {lost}")
    if stats.dropped:
        parts.append(f"{stats.dropped} examples are dropped (target alone too long)")
    return (f"{data_file}: at --max-length {max_length} {' and '.join(parts)}; the longest example "
            f"needs {stats.longest_needed} tokens, --max-length {fits} keeps them all whole")


# --- model -----------------------------------------------------------------------------------

def load_model(cfg: TrainConfig, base_dir: Path, device: torch.device, precision: str = "fp32"):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar is the one to watch
    try:
        # bf16: the frozen base is stored in bf16 (half the memory, no cast per step); the LoRA
        # weights and so the optimizer state stay fp32 (peft's autocast_adapter_dtype).
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise TmdError(f"base '{cfg.base}': cannot load the model from {base_dir} "
                       f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    finally:
        hf_logging.enable_progress_bar()
    model.config.use_cache = False
    if cfg.activation_checkpointing:
        with warnings.catch_warnings():  # transformers 5 renamed it; the old name works in every version
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*gradient_checkpointing_enable.*")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    linear_names = [name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear)]
    targets = cfg.target_modules or default_target_modules(model.config.model_type, linear_names)
    missing = [t for t in targets if t not in linear_names]
    if missing:
        raise TmdError(f"target_modules: {', '.join(missing)} not found in the base model "
                       f"({model.config.model_type}; Linear layers: {', '.join(sorted(set(linear_names)))})")
    torch.manual_seed(cfg.seed)  # the LoRA A matrices are drawn here
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft asks a deprecated transformers property; not ours to fix
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        model = get_peft_model(model, lora, autocast_adapter_dtype=True)
    model.to(device)
    return model, targets


def supports_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(_hf_model(model).forward).parameters


def _hf_model(model):
    """The transformers model inside a peft model (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# Architectures whose logits are exactly `final hidden state @ head.T` (no soft-capping, scaling or
# bias), so the head may be applied by _HeadLoss to the target rows alone.
CHUNKED_LOSS_TYPES = {"llama", "mistral", "qwen2", "qwen3", "olmo2"}
LOSS_CHUNK = 512  # rows per slice of the vocabulary projection: 512 x 49,152 fp32 = 96 MiB


def supports_chunked_loss(model) -> bool:
    hf = _hf_model(model)
    head = hf.get_output_embeddings()
    return (hf.config.model_type in CHUNKED_LOSS_TYPES and isinstance(head, torch.nn.Linear)
            and head.bias is None and not head.weight.requires_grad)


class _HeadLoss(torch.autograd.Function):
    """Summed cross-entropy of `rows @ weight.T` against `targets`, LOSS_CHUNK rows at a time.

    Autograd would keep every slice's [rows x vocab] logits (and their softmax) for backward; here
    the gradient with respect to the rows is computed in the forward pass, slice by slice, and
    only that [rows x hidden] tensor is kept. The head weight is frozen (LoRA does not train it),
    so no gradient is needed for it. Same arithmetic as cross_entropy: logits in fp32."""

    @staticmethod
    def forward(ctx, rows, weight, targets, chunk: int):
        need_grad = ctx.needs_input_grad[0]
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        grads = torch.empty(rows.shape, dtype=torch.float32, device=rows.device) if need_grad else None
        with torch.autocast(device_type=rows.device.type, enabled=False):
            for start in range(0, rows.shape[0], chunk):
                logits = (rows[start:start + chunk].to(weight.dtype) @ weight.t()).float()
                target = targets[start:start + chunk]
                logp = torch.log_softmax(logits, dim=-1)
                del logits  # one [rows x vocab] tensor at a time
                total -= logp.gather(1, target[:, None]).sum()
                if need_grad:  # d(loss)/d(logits) = softmax - one-hot, then back through the head
                    probs = logp.exp_()
                    probs[torch.arange(len(target), device=probs.device), target] -= 1
                    grads[start:start + chunk] = (probs.to(weight.dtype) @ weight).float()
        ctx.save_for_backward(grads if need_grad else torch.empty(0))
        ctx.rows_dtype = rows.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        (grads,) = ctx.saved_tensors
        return (grads * grad_output).to(ctx.rows_dtype), None, None, None


def target_loss_sum(model, batch: dict, device: torch.device, keep_ok: bool = True,
                    chunked: bool = False) -> torch.Tensor:
    """Summed cross-entropy over the target tokens of a batch.

    Position p predicts token p+1. chunked (the default path in training, see supports_chunked_loss):
    the model's trunk gives the final hidden states, and the head is applied to the rows that
    predict a target token alone, in slices (_HeadLoss). Otherwise the head is applied from the
    earliest target start - 1 onward (`logits_to_keep`, when keep_ok), or everywhere."""
    input_ids = batch["input_ids"].to(device)
    labels = batch["labels"].to(device)
    attention = batch["attention_mask"].to(device)
    shifted = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)
    if chunked:
        hf = _hf_model(model)
        trunk = getattr(hf, hf.base_model_prefix)
        hidden = trunk(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state
        wanted = shifted != -100
        return _HeadLoss.apply(hidden[wanted], hf.get_output_embeddings().weight, shifted[wanted], LOSS_CHUNK)
    width = input_ids.shape[1]
    keep = width - batch["first_target"] + 1
    kwargs = {"logits_to_keep": keep} if keep_ok else {}
    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False, **kwargs).logits
    logits = logits[:, -keep:].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted[:, -keep:].reshape(-1),
                           ignore_index=-100, reduction="sum")


class TargetLoss(torch.nn.Module):
    """The peft model with target_loss_sum as its forward: the module DistributedDataParallel wraps
    (DDP must see the forward pass that leads to the gradients it sums)."""

    def __init__(self, model, device: torch.device, keep_ok: bool, chunked: bool):
        super().__init__()
        self.model = model
        self.device = device
        self.keep_ok, self.chunked = keep_ok, chunked

    def forward(self, batch: dict) -> torch.Tensor:
        return target_loss_sum(self.model, batch, self.device, self.keep_ok, self.chunked)


@torch.no_grad()
def evaluate(loss: TargetLoss, examples: list[Example], cfg: TrainConfig, pad_id: int, precision,
             ranks: Ranks = Ranks()) -> float | None:
    """Mean target-token loss over `examples`; with several ranks each evaluates every N-th batch."""
    if not examples:
        return None
    was_training = loss.training
    loss.eval()
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]))
    total, count = 0.0, 0
    pad_to = cfg.max_length if cfg.pad_to_max else None
    starts = list(range(0, len(order), cfg.batch_size))
    for start in starts[ranks.rank::ranks.world]:
        batch = collate([examples[i] for i in order[start:start + cfg.batch_size]], pad_id, pad_to)
        with autocast_for(loss.device, precision):
            total += loss(batch).item()
        count += batch["n_target"]
    if ranks.distributed:
        total, count = all_sum([total, count])
    loss.train(was_training)
    return total / count


# --- checkpoints -----------------------------------------------------------------------------

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
        meta = _object(read_json(file, "checkpoint state file"), file)
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


def _object(value, file: Path) -> dict:
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


# --- outputs ---------------------------------------------------------------------------------

def plot_losses(log: list[dict], evals: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if log:
        steps, losses = [e["step"] for e in log], [e["loss"] for e in log]
        ax.plot(steps, losses, label="train (per step)", lw=1, alpha=0.45 if len(log) >= 10 else 1)
        if len(log) >= 10:  # a step sees only batch x accum examples: show the trend too
            w = max(3, len(log) // 8)
            smooth = [sum(losses[max(0, i - w + 1):i + 1]) / len(losses[max(0, i - w + 1):i + 1])
                      for i in range(len(losses))]
            ax.plot(steps, smooth, label=f"train (mean of last {w} steps)", lw=1.8, color="C0")
    if evals:
        ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o--", label="held-out")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over target tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def finished_record(out: Path) -> AdapterMeta | None:
    """The tmd.json of a finished run in `out`; None when there is none, one line when unreadable."""
    path = out / DONE_FILE
    if not path.is_file():
        return None
    try:
        return AdapterMeta.from_json(read_json(path, "tmd.json"), str(path))
    except TmdError as e:  # hand-edited: say so, rather than silently train again over it
        raise TmdError(f"{e}; fix it, or pass --fresh to train again") from None


# --- the run ---------------------------------------------------------------------------------

@dataclass
class TrainResult:
    module: str
    out: Path
    skipped: bool = False        # the output already held this finished run
    resumed_from: int = 0        # the step a checkpoint put us at (0 = fresh start)
    metrics: dict = field(default_factory=dict)


StepHook = Callable[[LoopState], None]


def train(cfg: TrainConfig, *, resume: bool | None = None, fresh: bool = False, console=None,
          on_step: StepHook | None = None) -> TrainResult:
    """Train one module's adapter into cfg.out. resume=None resumes a checkpoint if there is one,
    True requires one, False ignores none (an existing checkpoint is an error); fresh=True clears
    checkpoints and any finished run in cfg.out first. `on_step` sees the state after every step
    (and its checkpoint, if any); an exception there stops the run as a kill would.

    In a process group (`--nproc`, torchrun) every rank calls this; rank 0 alone writes files and
    prints (pass `console` on rank 0 only)."""
    ranks = current_ranks()
    say = console.print if console is not None and ranks.main else (lambda *a, **k: None)
    started = time.perf_counter()
    out = cfg.out
    ckpts = Checkpoints(out, cfg.keep_checkpoints)
    if fresh and ranks.main:
        if ckpts.root.exists():
            shutil.rmtree(ckpts.root)
        (out / DONE_FILE).unlink(missing_ok=True)
    barrier()  # every rank sees the output folder as rank 0 left it

    device, precision = pick_device(cfg, ranks)
    fingerprint = {**cfg.run_fingerprint(), "precision": precision}
    data_file = cfg.data_file()
    done = finished_record(out)
    if done is not None:
        return _the_finished_run(done, cfg, fingerprint, data_file, say)

    threads = set_threads(cfg, ranks)
    if cfg.release_memory:
        return_freed_memory()
    data = prepare(cfg, warn=lambda s: say(f"[yellow]warning:[/yellow] {s}", highlight=False))
    tokenizer = data.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    lengths = [len(e) for e in data.train]
    pad_to = cfg.max_length if cfg.pad_to_max else None

    batches0 = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, 0)
    steps_per_epoch = math.ceil(len(batches0) / cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)

    model, targets = load_model(cfg, data.base_dir, device, precision)
    keep_ok = cfg.head_on_targets_only and supports_logits_to_keep(model)
    chunked = cfg.head_on_targets_only and cfg.chunked_loss and supports_chunked_loss(model)
    loss_of = TargetLoss(model, device, keep_ok, chunked)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(cfg, params, total_steps)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    # the module each training pass goes through: DDP sums the ranks' gradients in its backward
    step_loss = loss_of if not ranks.distributed else torch.nn.parallel.DistributedDataParallel(
        loss_of, device_ids=[device.index] if device.type == "cuda" else None)

    meta = {"fingerprint": fingerprint, "data_sha256": data.data_sha256, "total_steps": total_steps,
            "eval_ids": sorted(e.id for e in data.eval)}
    state = LoopState()
    latest = _checkpoint_to_resume(ckpts, resume, data, fingerprint)
    if latest is not None:
        state = Checkpoints.restore(latest, model, optimizer, scheduler, scaler)
        say(f"[cyan]{cfg.module}[/cyan]: resuming from {latest.name} (step {state.step}/{total_steps})")
    resumed_from = state.step
    state.sessions += 1

    stats = data.stats
    rank_note = f", {ranks.world} ranks" if ranks.distributed else ""
    say(f"[b]{cfg.module}[/b]: {stats.train} train / {stats.eval} held-out examples from "
        f"{data.data_file}; {total_steps} steps ({steps_per_epoch}/epoch, batch {cfg.batch_size} x "
        f"accum {cfg.grad_accum}); {device.type} {precision}, {threads} threads{rank_note}; LoRA r={cfg.lora_r} "
        f"alpha={cfg.lora_alpha} on {','.join(targets)}; truncated {stats.truncated}, dropped {stats.dropped}",
        highlight=False)

    def evaluate_now():
        loss = evaluate(loss_of, data.eval, cfg, pad_id, precision, ranks)
        if loss is not None:
            state.evals.append({"step": state.step, "epoch": state.epoch, "loss": round(loss, 6)})
        return loss

    def elapsed() -> float:
        return state.wall_seconds + (time.perf_counter() - started)

    last_save = time.perf_counter()

    def checkpoint() -> Path:
        """Rank 0 writes it; the others only name it (they hold the same weights)."""
        nonlocal last_save
        last_save = time.perf_counter()
        if not ranks.main:
            return ckpts.root / f"step-{state.step:06d}"
        rss = max(state.peak_rss_mb, peak_rss_mb())
        snapshot = dataclasses.replace(state, wall_seconds=elapsed(), peak_rss_mb=rss)
        return ckpts.save(model, optimizer, scheduler, scaler, snapshot, meta)

    def checkpoint_due(end_of_epoch: bool) -> bool:
        timed = cfg.save_minutes and time.perf_counter() - last_save >= 60 * cfg.save_minutes
        return bool(end_of_epoch or (cfg.save_every and state.step % cfg.save_every == 0) or timed)

    def optimizer_step(window: list[list[int]]) -> tuple[float, list[float]]:
        """This rank's share of one optimizer step over grad_accum micro-batches: (its summed
        target-token loss, its [tokens, slots, target tokens]). The gradient is the whole step's."""
        n_target = sum(data.train[i].n_target for b in window for i in b)
        mine = rank_share(window, ranks)
        passes = passes_per_rank(window, ranks.world) if ranks.distributed else len(mine)
        loss_sum, counts = 0.0, [0, 0, 0]
        for k in range(passes):
            index, ids = mine[k] if k < len(mine) else (-1, window[0][:1])  # -1: a pass that counts 0
            batch = collate([data.train[i] for i in ids], pad_id, pad_to)
            # dropout draws depend on the step and the micro-batch only: a resumed run, or another
            # number of ranks training the same micro-batch, draws the same masks
            torch.manual_seed(_micro_seed(cfg.seed, state.step, index))
            last = k == passes - 1
            with (step_loss.no_sync() if ranks.distributed and not last else nullcontext()):
                with autocast_for(device, precision):
                    part = step_loss(batch)
                weight = ranks.world / n_target if index >= 0 else 0.0  # DDP averages over ranks
                scaled = part * weight
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if index >= 0:
                loss_sum += part.item()
                counts = [counts[0] + batch["n_tokens"], counts[1] + batch["n_slots"],
                          counts[2] + batch["n_target"]]
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_sum, counts

    def record_step(loss: float, lr: float, n_windows: int) -> bool:
        """Log the step just taken and move the loop position on; True at the end of an epoch."""
        state.window += 1
        state.log.append({"step": state.step, "epoch": round(state.epoch + state.window / n_windows, 4),
                          "loss": round(loss, 6), "lr": lr, "tokens": state.tokens,
                          "seconds": round(elapsed(), 2)})
        if progress is not None:
            progress.advance(loss, state.tokens / max(state.train_seconds, 1e-9))
        if state.window < n_windows:
            return False
        state.epoch, state.window, state.epoch_batches = state.epoch + 1, 0, []
        evaluate_now()
        return True

    if state.step == 0 and not state.evals:
        evaluate_now()  # the held-out loss before any training, for the curve

    progress = _progress(console, cfg, total_steps, state.step) if cfg.progress and ranks.main else None
    loss_of.train()
    loop_started = time.perf_counter()
    with stop_requests(say, cfg.module) as stop, progress or nullcontext():
        for window, n_windows in _windows_left(state, lengths, cfg, epochs, total_steps):
            t0 = time.perf_counter()
            loss_sum, counts = optimizer_step(window)
            stopping = bool(stop)
            if ranks.distributed:  # the step's totals, and whether any rank was asked to stop
                loss_sum, *counts, stopping = all_sum([loss_sum, *counts, float(stopping)])
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            state.tokens, state.slots, state.target_tokens = (
                int(a + b) for a, b in zip((state.tokens, state.slots, state.target_tokens), counts))
            state.train_seconds += time.perf_counter() - t0
            state.step += 1
            loss = loss_sum / sum(data.train[i].n_target for b in window for i in b)
            if not math.isfinite(loss):
                raise TmdError(f"{cfg.module}: training loss became {loss} at step {state.step}; "
                               "lower --lr or use --precision fp32")
            end_of_epoch = record_step(loss, lr, n_windows)
            if checkpoint_due(end_of_epoch) or stopping:
                saved = checkpoint()
                if progress is None:  # logs only: a line per checkpoint says how far it got
                    say(_status_line(cfg.module, state, total_steps, resumed_from, loop_started, saved),
                        highlight=False, soft_wrap=True)
            if stopping:
                barrier()  # rank 0's checkpoint is on disk before any rank reports the stop
                why = stop[0] if stop else "a signal to another rank"
                raise TmdError(f"{cfg.module}: stopped by {why} at step {state.step}/{total_steps}; "
                               f"checkpoint {saved} saved, the same command resumes from it")
            if on_step is not None:
                on_step(state)

    if not state.evals or state.evals[-1]["step"] != state.step:
        evaluate_now()  # a max_steps stop inside an epoch
    state.wall_seconds = elapsed()
    state.peak_rss_mb = max(state.peak_rss_mb, peak_rss_mb())
    rank_rss = all_gather_floats(state.peak_rss_mb) if ranks.distributed else [state.peak_rss_mb]
    metrics = _metrics(cfg, state, data, lengths, device, precision, threads, total_steps, resumed_from)
    metrics.update(ranks=ranks.world, peak_rss_mb_per_rank=[round(r, 1) for r in rank_rss],
                   chunked_loss=chunked)
    if ranks.main:
        _write_outputs(cfg, model, tokenizer, data, metrics, state, fingerprint, targets, precision, device,
                       ranks.world)
        if not cfg.keep_checkpoints_after and ckpts.root.exists():
            shutil.rmtree(ckpts.root)
    barrier()  # the outputs exist before any rank returns
    say(f"[green]{cfg.module}[/green]: done in {metrics['wall_seconds']:.0f}s, loss "
        f"{metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f}"
        + (f", held-out {metrics['eval_loss']:.3f}" if metrics["eval_loss"] is not None else "")
        + f", {metrics['tokens_per_second']:.0f} tok/s, peak RSS {metrics['peak_rss_mb']:.0f} MB -> {out}",
        highlight=False)
    return TrainResult(cfg.module, out, resumed_from=resumed_from, metrics=metrics)


def train_rank(rank: int, world: int, rendezvous: str, cfg: TrainConfig, resume: bool | None,
               fresh: bool) -> None:
    """One rank of `tmd train --nproc N` (trainer.distributed.launch starts it in a fresh process)."""
    from tmd_local.console import err_console

    from .distributed import init, shutdown

    init(pick_device(cfg)[0].type, rendezvous, rank, world)
    try:
        train(cfg, resume=resume, fresh=fresh, console=err_console if rank == 0 else None)
    finally:
        shutdown()


def _optimizer(cfg: TrainConfig, params: list, total_steps: int):
    """AdamW (no weight decay on vectors) and transformers' linear schedule with warm-up, written out."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps)

    def linear(step: int) -> float:
        if step < cfg.warmup_steps:
            return step / max(1, cfg.warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - cfg.warmup_steps))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, linear)


def _micro_seed(seed: int, step: int, index: int) -> int:
    """The RNG seed of micro-batch `index` of optimizer step `step` (index -1: a zero-weight pass)."""
    return (seed * 1_000_003 + step * 1_009 + index + 1) % 2**63


def _windows_left(state: LoopState, lengths: list[int], cfg: TrainConfig, epochs: int, total_steps: int):
    """The accumulation windows still to train, from where `state` stands, each as (its batches,
    windows in its epoch). The caller moves state.window and state.epoch on as it trains them; each
    epoch gets its own batch order, kept in the state so a resumed run continues the same one."""
    while state.epoch < epochs and state.step < total_steps:
        if state.window == 0 or not state.epoch_batches:
            state.epoch_batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, state.epoch)
        windows = [state.epoch_batches[i:i + cfg.grad_accum]
                   for i in range(0, len(state.epoch_batches), cfg.grad_accum)]
        epoch = state.epoch
        while state.epoch == epoch and state.window < len(windows) and state.step < total_steps:
            yield windows[state.window], len(windows)


def _metrics(cfg, state: LoopState, data: Prepared, lengths, device, precision, threads, total_steps,
             resumed_from) -> dict:
    batches0 = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, 0)
    losses = [e["loss"] for e in state.log]
    return {
        "module": cfg.module,
        "steps": state.step, "total_steps": total_steps, "epochs": cfg.epochs,
        "steps_per_epoch": math.ceil(len(batches0) / cfg.grad_accum),
        "loss_per_step": state.log,
        "eval": state.evals,
        "eval_loss": state.evals[-1]["loss"] if state.evals else None,
        "first_loss": losses[0] if losses else float("nan"),
        "final_loss": losses[-1] if losses else float("nan"),
        "tokens_trained": state.tokens, "target_tokens_trained": state.target_tokens,
        "token_slots": state.slots,
        "padded_token_ratio": round((state.slots - state.tokens) / state.slots, 4) if state.slots else 0.0,
        # the same epoch-0 batches padded both ways, to compare dynamic padding with the paper's
        "padded_token_ratio_dynamic": round(padding_ratio(batches0, lengths, None), 4),
        "padded_token_ratio_pad_to_max": round(padding_ratio(batches0, lengths, cfg.max_length), 4),
        "tokens_per_second": state.tokens / state.train_seconds if state.train_seconds else 0.0,
        "train_seconds": round(state.train_seconds, 2),
        "wall_seconds": round(state.wall_seconds, 2),
        "peak_rss_mb": round(state.peak_rss_mb, 1),
        "sessions": state.sessions, "resumed_from_step": resumed_from,
        "examples": {"records": data.stats.records, "train": data.stats.train, "eval": data.stats.eval,
                     "truncated": data.stats.truncated, "dropped": data.stats.dropped,
                     "dropped_ids": data.stats.dropped_ids,
                     "max_example_tokens": data.stats.max_example_tokens},
        "device": device.type, "precision": precision, "threads": threads,
        "peak_gpu_memory_mb": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                               if device.type == "cuda" else None),
        "torch": torch.__version__,
    }


def _write_outputs(cfg, model, tokenizer, data: Prepared, metrics, state, fingerprint, targets,
                   precision, device, ranks: int = 1) -> None:
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    write_json_atomic(out / "metrics.json", metrics)
    plot_losses(state.log, state.evals, out / "loss.png",
                f"{cfg.module} LoRA on {cfg.base} ({data.teacher} teacher)")
    # the precision `auto` resolved to; ranks: the processes that trained it (same global batch)
    hyper = {**cfg.hyperparameters(), "target_modules": targets, "precision": precision,
             "device": device.type, "ranks": ranks}
    # what was really trained, so every result of this student can say it (epochs honestly)
    training = {"questions": len({e.group for e in data.train}), "examples": len(data.train),
                "steps": state.step, "epochs": round(metrics["steps"] / max(1, metrics["steps_per_epoch"]), 3),
                "lr": cfg.lr}
    meta = AdapterMeta(module=cfg.module, base=cfg.base, base_source=str(data.base_dir.resolve()),
                       teacher=data.teacher, data=str(data.data_file), data_sha256=data.data_sha256,
                       hyperparameters=hyper, training=training, tmd_version=TMD_VERSION,
                       prompt_version=data.prompt_version)
    write_json_atomic(out / DONE_FILE, meta.to_json())


def _checkpoint_to_resume(ckpts: Checkpoints, resume: bool | None, data: Prepared,
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


def _status_line(module: str, state: LoopState, total_steps: int, resumed_from: int, loop_started: float,
                 saved: Path) -> str:
    """`drd: step 76/570 (epoch 0.40), loss 1.278, 105 tok/s, ETA 3h41m, saved step-000076`: the
    loss averages the last 10 steps; the ETA extrapolates this process's own pace."""
    done_here = state.step - resumed_from
    recent = [s["loss"] for s in state.log[-10:]]
    per_step = (time.perf_counter() - loop_started) / max(1, done_here)
    eta = int(per_step * (total_steps - state.step))
    speed = state.tokens / max(state.train_seconds, 1e-9)
    return (f"{module}: step {state.step}/{total_steps} (epoch {state.log[-1]['epoch']:.2f}), loss "
            f"{sum(recent) / len(recent):.3f}, {speed:.0f} tok/s, ETA {eta // 3600}h{eta % 3600 // 60:02d}m, "
            f"saved {saved.name}")


@contextmanager
def stop_requests(say, module: str):
    """A list that SIGTERM or SIGINT fills with the signal's name: the loop then checkpoints and stops
    after the step under way, so a polite kill loses nothing. A second signal acts as usual at once.
    Outside the main thread (where handlers cannot be set) the list just stays empty."""
    requested: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    # a signal the parent chose to ignore (SIGINT of a shell's background job) stays ignored
    previous = {sig: old for sig, old in previous.items() if old is not signal.SIG_IGN}

    def handler(signum, frame):
        if requested:  # asked twice: the usual behaviour, now
            signal.signal(signum, previous[signum] or signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        requested.append(signal.Signals(signum).name)
        say(f"[yellow]{module}[/yellow]: {requested[0]}: checkpointing after this step, then stopping "
            "(send it again to stop at once)", highlight=False, soft_wrap=True)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old or signal.SIG_DFL)


def _the_finished_run(done: AdapterMeta, cfg: TrainConfig, fingerprint: dict, data_file: Path,
                      say) -> TrainResult:
    """cfg.out already holds a finished run: this very one (nothing to do), or another (an error)."""
    differs = _differs_from_finished(done, cfg, fingerprint, data_file)
    if differs:
        raise TmdError(f"{cfg.out}: holds a finished run with other {differs}; choose another --out "
                       "or pass --fresh to replace it")
    say(f"[green]{cfg.module}[/green]: {cfg.out} already holds this finished run; nothing to do "
        "(--fresh retrains)")
    metrics_file = cfg.out / "metrics.json"
    metrics = _object(read_json(metrics_file, "metrics file"), metrics_file) if metrics_file.is_file() else {}
    return TrainResult(cfg.module, cfg.out, skipped=True, metrics=metrics)


def _differs_from_finished(done: AdapterMeta, cfg: TrainConfig, fingerprint: dict, data_file: Path) -> str:
    """'' when tmd.json records this very run (same data and training settings), else what differs."""
    if not data_file.is_file() or done.data_sha256 != file_sha256(data_file):
        return "data (sha256 differs)"
    recorded = {**done.hyperparameters, "module": done.module, "base": done.base}
    for key, value in fingerprint.items():
        if key == "target_modules" and value is None:
            continue  # the architecture's default: the same base gives the same list
        if recorded.get(key) != value:
            return f"settings ({key}={recorded.get(key)!r}, this run has {value!r})"
    return ""


class _progress:
    """A rich progress bar: step M/N, loss, tokens/s, elapsed and ETA (on stderr)."""

    def __init__(self, console, cfg: TrainConfig, total: int, done: int):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        columns = [TextColumn("[b]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=console or Console(stderr=True))
        self.task = self.bar.add_task(cfg.module, total=total, completed=done, loss="-", speed="-")
        self.bar.start()

    def advance(self, loss: float, speed: float) -> None:
        self.bar.update(self.task, advance=1, loss=f"{loss:.3f}", speed=f"{speed:.0f}")

    def __enter__(self) -> "_progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

