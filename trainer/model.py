"""The model a run trains: the base from its Hugging Face folder, with LoRA attached to the
target modules (the architecture's default list, or --target-modules)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from tmd_local.core.errors import TmdError

from .config import TrainConfig, default_target_modules


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
