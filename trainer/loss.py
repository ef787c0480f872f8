"""The training loss: summed cross-entropy over target tokens only, with the LM head applied to
the target rows in slices where the architecture allows it (_HeadLoss), and the held-out loss."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import Example, collate
from .device import autocast_for
from .distributed import Ranks, all_sum


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
