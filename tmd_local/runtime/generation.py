"""What running a module means, apart from llama.cpp: the settings a generation runs under, what it
returns, a role's module reference, cancellation, and the token arithmetic the real module
(tmd_local.runtime.runner) and the fake one (tmd_local.runtime.fake) share with the pipeline.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..core.errors import TmdError
from ..core.registry import ModelRef

MIN_NEW_TOKENS = 16  # below this a stage's answer is useless, so overflow is an error instead


class Cancelled(TmdError):
    """The user stopped generation; raised between tokens or between stages."""

    def __init__(self, message: str = "stopped by the user"):
        super().__init__(message)


StopCheck = Callable[[], bool]


@dataclass
class GenerationSettings:
    n_ctx: int = 2048
    n_threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    temperature: float = 0.0  # 0 = greedy
    repeat_penalty: float = 1.1
    seed: int = 0
    max_tokens: dict[str, int] = field(default_factory=lambda: {
        "analyzer": 128, "informant": 128, "reasoner": 320, "drd": 384})
    # Keep the KV cache between generations of a resident module, so a prompt sharing its start with
    # the previous one (every prompt of a role opens with the same instructions) evaluates only the
    # rest. Off: each prompt is evaluated from scratch (kept for measuring; the tokens are the same).
    prefix_cache: bool = True

    @property
    def n_batch(self) -> int:
        return min(512, self.n_ctx)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModuleRef(ModelRef):
    """A role's module as a bundle describes it: the GGUF, an optional LoRA adapter GGUF, and the
    size and sha256 the manifest promises for each (checked before the first load)."""
    adapter: Path | None = None
    quant: str | None = None
    size: int | None = None
    sha256_expected: str | None = None
    adapter_sha256_expected: str | None = None
    source: str = ""  # where the promise comes from, e.g. "models/b/manifest.json: modules.analyzer"
    eos_token_id: int | None = None  # load the GGUF with this EOS (an adapter trained to end there)

    @property
    def label(self) -> str:
        return self.name + (f" + {self.adapter.name}" if self.adapter else "")


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str
    prompt_ids: list[int] = field(default_factory=list, repr=False)
    max_tokens: int = 0  # the limit it ran under, after the clamp to the room left in the context

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


TokenCallback = Callable[[str], None]


def clamp_to_context(max_tokens: int, prompt_tokens: int, n_ctx: int) -> int:
    """max_tokens cut to the room the prompt leaves; too little room is an error, not a stub answer."""
    room = n_ctx - prompt_tokens
    if room < MIN_NEW_TOKENS:
        raise TmdError(f"prompt of {prompt_tokens} tokens does not fit the context of "
                       f"{n_ctx} tokens (raise --n-ctx)")
    return min(max_tokens, room)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def softmax_over(logits: dict[str, float]) -> dict[str, float]:
    """Probabilities from logits (or log-probabilities), over just these choices."""
    import math

    top = max(logits.values())
    weights = {k: math.exp(v - top) for k, v in logits.items()}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}
