"""Teacher training sets -> token batches with the loss on the target only.

One example is the rendered prompt followed by the target and the EOS token:

    render_messages(messages, chat_template, add_generation_prompt=True) + target + eos_token

The prompt and the target are tokenized separately and joined as token ids, because at inference
llama.cpp tokenizes the prompt alone and the model generates the target's tokens after it. Labels
are -100 on the prompt and on padding, so only target tokens (and the EOS) are learned.

A prompt that does not fit `max_length` beside its target is shortened on the prompt side; the
target is always kept whole. `truncation="middle"` (default) keeps the prompt's first and last
halves of the room left: the start holds the chat template's header and the task instruction, the
end holds the last instruction line and the assistant header the target must follow; what goes is
the middle (the question text, options or knowledge). `truncation="left"` cuts the prompt's start.
An example whose target alone leaves fewer than MIN_PROMPT_TOKENS for the prompt is dropped;
both counts are reported.

Batches are grouped by length (deterministic for a seed and epoch) and padded to their longest
member; `pad_to_max` pads every batch to `max_length`, as the paper did.

`prepare` puts this together for one run (records, the base's tokenizer, examples, held-out split)
before any model is loaded.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tmd_local.core.errors import TmdError
from tmd_local.core.formats import TeacherRecord
from tmd_local.core.hf_base import ensure_hf_base
from tmd_local.core.prompts import PROMPT_VERSION, render_messages
from tmd_local.core.registry import file_sha256

from .config import TrainConfig

IGNORE_INDEX = -100
MIN_PROMPT_TOKENS = 8
MEGABATCH = 16  # batches per length-sorting group: larger = less padding, less randomness


@dataclass
class Example:
    id: str
    group: str
    input_ids: list[int]
    n_prompt: int             # tokens before the target (after any truncation)
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_target(self) -> int:
        return len(self.input_ids) - self.n_prompt


@dataclass
class DataStats:
    records: int = 0
    train: int = 0
    eval: int = 0
    truncated: int = 0          # prompts shortened to fit max_length
    dropped: int = 0            # examples whose target alone did not fit
    dropped_ids: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    target_tokens: int = 0
    max_example_tokens: int = 0
    longest_needed: int = 0     # tokens the longest example would take uncut (prompt + target + EOS)


# --- reading --------------------------------------------------------------------------------

def load_records(path: Path, module: str) -> list[TeacherRecord]:
    """Every record of a teacher training set, each checked; problems name file:line and field."""
    path = Path(path)
    if path.is_dir():
        raise TmdError(f"{path}: is a folder, expected the teacher run's {module}.jsonl")
    if not path.is_file():
        raise TmdError(f"{path}: no such file (expected the {module} training set written by `tmd teach`)")
    from tmd_local.core.jsonl import read_jsonl_numbered, require_regular_file

    require_regular_file(path, "training set")
    records: list[TeacherRecord] = []
    for lineno, obj in read_jsonl_numbered(path, repair=False):  # one reader: UTF-8, depth, NaN...
        records.append(TeacherRecord.from_json(obj, f"{path}:{lineno}", module))
    if not records:
        raise TmdError(f"{path}: no training examples (the file is empty)")
    return records


# --- tokenizing -----------------------------------------------------------------------------

def chat_template_of(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # a tokenizer with several named templates: use the default one
        template = template.get("default")
    if not template:
        raise TmdError("the base model's tokenizer has no chat template; tmd renders every prompt with "
                       "the model's own template, so the base must ship one")
    return template


def render_prompt(messages: list[dict], tokenizer) -> str:
    return render_messages(messages, chat_template_of(tokenizer), bos_token=tokenizer.bos_token or "",
                           eos_token=tokenizer.eos_token or "", add_generation_prompt=True)


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids exactly as written: the template places special tokens, the tokenizer adds none."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def build_examples(records: list[TeacherRecord], tokenizer, max_length: int,
                   truncation: str = "middle") -> tuple[list[Example], DataStats]:
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise TmdError("the base model's tokenizer has no EOS token; the student could never stop")
    prompts = encode(tokenizer, [render_prompt(r.messages, tokenizer) for r in records])
    targets = encode(tokenizer, [r.target for r in records])
    stats = DataStats(records=len(records))
    examples = []
    for rec, prompt, target in zip(records, prompts, targets):
        target = target + [eos_id]
        stats.longest_needed = max(stats.longest_needed, len(prompt) + len(target))
        room = max_length - len(target)
        if room < MIN_PROMPT_TOKENS:
            stats.dropped += 1
            stats.dropped_ids.append(rec.id)
            continue
        truncated = len(prompt) > room
        if truncated:
            prompt = truncate_prompt(prompt, room, truncation)
            stats.truncated += 1
        examples.append(Example(rec.id, rec.group, prompt + target, len(prompt), truncated))
        stats.prompt_tokens += len(prompt)
        stats.target_tokens += len(target)
        stats.max_example_tokens = max(stats.max_example_tokens, len(prompt) + len(target))
    return examples, stats


def truncate_prompt(prompt: list[int], room: int, how: str) -> list[int]:
    if how == "left":
        return prompt[len(prompt) - room:]
    head = room // 2
    return prompt[:head] + prompt[len(prompt) - (room - head):]


# --- splitting and batching -------------------------------------------------------------------

def split_heldout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out whole questions (an Informant's subquestions stay together), chosen by the seed."""
    groups = sorted({e.group for e in examples})
    if fraction <= 0 or len(groups) < 2:
        return examples, []
    rng = random.Random(f"heldout:{seed}")
    rng.shuffle(groups)
    n_eval = min(len(groups) - 1, max(1, math.ceil(fraction * len(groups))))
    held = set(groups[:n_eval])
    return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffle, sort by length within groups of MEGABATCH batches, cut into batches, shuffle those.

    Batches hold examples of similar length (little padding) while the order stays random; the
    result depends only on (lengths, batch_size, seed, epoch), so a resumed run sees the same order.
    """
    rng = random.Random(f"batches:{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    size = batch_size * MEGABATCH
    for start in range(0, len(order), size):
        group = sorted(order[start:start + size], key=lambda i: -lengths[i])
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def padded_length(lengths: list[int], pad_to: int | None) -> int:
    return pad_to if pad_to is not None else max(lengths)


def padding_ratio(batches: list[list[int]], lengths: list[int], pad_to: int | None) -> float:
    """Share of the token slots in these batches that are padding."""
    slots = sum(padded_length([lengths[i] for i in b], pad_to) * len(b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return (slots - real) / slots if slots else 0.0


def collate(examples: list[Example], pad_id: int, pad_to: int | None = None) -> dict:
    """Right-padded tensors; labels are the input ids on target tokens and -100 everywhere else."""
    import torch

    width = padded_length([len(e) for e in examples], pad_to)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        ids = torch.tensor(e.input_ids, dtype=torch.long)
        input_ids[row, :len(e)] = ids
        attention[row, :len(e)] = 1
        labels[row, e.n_prompt:len(e)] = ids[e.n_prompt:]
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels,
            "n_tokens": sum(len(e) for e in examples), "n_slots": width * len(examples),
            "n_target": sum(e.n_target for e in examples),
            "first_target": min(e.n_prompt for e in examples)}


# --- a run's data -----------------------------------------------------------------------------

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
