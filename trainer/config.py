"""Everything one training run depends on, in one dataclass that checks itself.

Defaults are the paper's (section 4, "Fine-tuning details"): LoRA r 16, alpha 8, dropout 0.1; AdamW,
learning rate 1e-4 with a linear schedule, weight decay 0.01; 3 epochs of batch 2 with gradient
accumulation 4; sequences of at most 512 tokens. Two things differ unless asked for, both recorded:
batches are padded to their longest member (`pad_to_max=True` pads to 512 as the paper did), and
the precision is the machine's (the paper trained in fp16 on GPUs; `precision="auto"` picks bf16 on
CUDA devices and CPUs with bf16 units, fp16 on other CUDA devices, fp32 on other CPUs).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from tmd_local.core.errors import TmdError
from tmd_local.core.roles import ROLES

MODULES = ROLES
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
TRUNCATIONS = ("middle", "left")

# LoRA targets per architecture (config.model_type): attention and MLP projections, as the paper's
# peft setup on Llama-style students. Anything else falls back to every Linear layer but the head.
TARGET_MODULES = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "granite": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "olmo2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


@dataclass
class TrainConfig:
    # what to train
    module: str
    data: Path                       # the teacher run folder (holding <module>.jsonl) or a .jsonl file
    out: Path                        # the adapter folder to write
    base: str = "smollm2-135m-instruct"
    # LoRA
    lora_r: int = 16
    lora_alpha: float = 8
    lora_dropout: float = 0.1
    target_modules: list[str] | None = None   # None: chosen from the architecture (TARGET_MODULES)
    # optimisation
    lr: float = 1e-4
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    max_grad_norm: float = 1.0       # 0 disables clipping
    epochs: int = 3
    max_steps: int | None = None     # stop after this many optimizer steps (the schedule spans them)
    batch_size: int = 2
    grad_accum: int = 4
    # data
    max_length: int = 512
    pad_to_max: bool = False
    truncation: str = "middle"       # how a too-long prompt is cut: "middle" or "left" (its start)
    eval_fraction: float = 0.05
    seed: int = 0
    # machinery (not part of what makes two runs comparable)
    save_every: int = 50             # optimizer steps between checkpoints; 0 = epoch ends only
    # Also a checkpoint once this many minutes passed since the last (0 = off): on a slow CPU 50
    # steps can be most of an hour, all lost to a kill.
    save_minutes: float = 10.0
    keep_checkpoints: int = 2
    keep_checkpoints_after: bool = False  # leave checkpoints/ behind once the run has finished
    precision: str = "auto"
    # The LM head only at positions that predict a target token (logits_to_keep): the same loss,
    # minus a vocabulary projection per prompt token. False exists for `make bench` to compare.
    head_on_targets_only: bool = True
    # ...and then in slices of rows that predict a target token, its gradient taken slice by slice,
    # so no [tokens x vocabulary] logits are kept for backward (train._HeadLoss): the same loss.
    chunked_loss: bool = True
    # Keep each decoder layer's input only and recompute the layer in backward: far less memory
    # for activations (batch x length x layers), one more forward pass of compute. Same loss: the
    # recomputation replays the dropout draws.
    activation_checkpointing: bool = False
    # Large freed tensors go back to the system (train.return_freed_memory): 1.5 GB less peak RSS,
    # but every large tensor's pages are faulted in afresh: a Reasoner step ran 0.75x as fast.
    release_memory: bool = False
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    # Fields that change the trained weights. A checkpoint made with other values is not resumed.
    RUN_FIELDS = ("module", "base", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "lr",
                  "weight_decay", "adam_betas", "adam_eps", "warmup_steps", "max_grad_norm",
                  "epochs", "max_steps", "batch_size", "grad_accum", "max_length", "pad_to_max",
                  "truncation", "eval_fraction", "seed", "precision")

    def __post_init__(self):
        self.data = Path(self.data)
        self.out = Path(self.out)
        if self.target_modules is not None:
            self.target_modules = [str(t).strip() for t in self.target_modules if str(t).strip()]
        self.adam_betas = tuple(self.adam_betas)
        self.validate()

    def validate(self) -> None:
        def bad(name: str, expected: str):
            raise TmdError(f"training config: {name}={getattr(self, name)!r}: expected {expected}")

        if self.module not in MODULES:
            bad("module", "one of " + ", ".join(MODULES))
        for name in ("lora_r", "epochs", "batch_size", "grad_accum", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(name, "a positive whole number")
        if not isinstance(self.max_length, int) or self.max_length < 16:
            bad("max_length", "a whole number of tokens, at least 16")
        for name in ("warmup_steps", "save_every", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                bad(name, "a whole number >= 0")
        if not _finite(self.save_minutes) or self.save_minutes < 0:
            bad("save_minutes", "a number of minutes >= 0 (0 = no timed checkpoints)")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            bad("max_steps", "a positive whole number, or None for whole epochs")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            bad("threads", "a positive whole number, or None for one per available core")
        if not _finite(self.lr) or not 0 < self.lr < 1:
            bad("lr", "a learning rate in (0, 1), e.g. 1e-4")
        if not _finite(self.lora_alpha) or self.lora_alpha <= 0:
            bad("lora_alpha", "a number > 0")
        if not _finite(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            bad("lora_dropout", "a probability in [0, 1)")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            bad("weight_decay", "a number >= 0")
        if not _finite(self.max_grad_norm) or self.max_grad_norm < 0:
            bad("max_grad_norm", "a number >= 0 (0 disables clipping)")
        if not _finite(self.adam_eps) or self.adam_eps <= 0:
            bad("adam_eps", "a number > 0")
        if len(self.adam_betas) != 2 or not all(_finite(b) and 0 <= b < 1 for b in self.adam_betas):
            bad("adam_betas", "two numbers in [0, 1)")
        if not _finite(self.eval_fraction) or not 0 <= self.eval_fraction < 0.5:
            bad("eval_fraction", "a fraction in [0, 0.5), e.g. 0.05 (0 = no held-out slice)")
        if self.truncation not in TRUNCATIONS:
            bad("truncation", "one of " + ", ".join(TRUNCATIONS))
        if self.precision not in PRECISIONS:
            bad("precision", "one of " + ", ".join(PRECISIONS))
        if self.device not in DEVICES:
            bad("device", "one of " + ", ".join(DEVICES))
        if self.target_modules is not None and not self.target_modules:
            bad("target_modules", "module names such as q_proj,v_proj (or None for the architecture's default)")
        if not self.base:
            bad("base", "a model name, .gguf path or Hugging Face folder")

    def data_file(self) -> Path:
        """The JSONL this run trains on: <data>/<module>.jsonl, or `data` itself when it is a file."""
        return self.data if self.data.suffix == ".jsonl" else self.data / f"{self.module}.jsonl"

    def run_fingerprint(self) -> dict:
        """The settings a checkpoint must share with this run to be resumed by it."""
        values = {name: getattr(self, name) for name in self.RUN_FIELDS}
        values["adam_betas"] = list(values["adam_betas"])
        return values

    def hyperparameters(self) -> dict:
        """What tmd.json records: every training setting, paths and display options left out."""
        skip = {"module", "data", "out", "base", "progress", "keep_checkpoints_after"}
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        values["adam_betas"] = list(values["adam_betas"])
        values.update(optimizer="adamw", lr_schedule="linear", loss="target tokens only")
        return values

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def default_target_modules(model_type: str, linear_names: list[str]) -> list[str]:
    """LoRA targets for an architecture: the table above, else every Linear leaf name but the head."""
    if model_type in TARGET_MODULES:
        return list(TARGET_MODULES[model_type])
    names = sorted({n for n in linear_names if n not in ("lm_head", "embed_out", "score")})
    if not names:
        raise TmdError(f"base architecture '{model_type}': no Linear layers found for LoRA; "
                       "name them with --target-modules")
    return names

