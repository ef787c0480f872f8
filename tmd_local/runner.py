"""One module at a time on llama.cpp: load a GGUF, generate, close, and measure each step."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from .errors import TmdError
from .memory import peak_rss_mb, reset_peak_rss, rss_mb
from .prompts import render_messages
from .registry import ModelRef

# llama.cpp's file-type codes (general.file_type) for the types reports mention.
FILE_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1",
              10: "q2_k", 11: "q3_k_s", 12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m",
              16: "q5_k_s", 17: "q5_k_m", 18: "q6_k", 32: "bf16"}

MIN_NEW_TOKENS = 16  # below this a stage's answer is useless, so overflow is an error instead


@dataclass
class GenerationSettings:
    n_ctx: int = 2048
    n_threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    temperature: float = 0.0  # 0 = greedy
    repeat_penalty: float = 1.1
    seed: int = 0
    max_tokens: dict[str, int] = field(default_factory=lambda: {
        "analyzer": 128, "informant": 128, "reasoner": 320, "drd": 384})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


TokenCallback = Callable[[str], None]


class LoadedModule:
    """A GGUF held by llama.cpp; renders prompts with the model's own chat template."""

    def __init__(self, model: ModelRef, settings: GenerationSettings):
        self.model = model
        self.settings = settings
        started = time.perf_counter()
        self._llm = _open_llama(model, settings)
        self.load_seconds = time.perf_counter() - started
        meta = self._llm.metadata
        self.chat_template = meta.get("tokenizer.chat_template")
        if not self.chat_template:
            raise TmdError(f"{model.path}: the GGUF has no tokenizer.chat_template; "
                           "tmd needs the model's chat template to build prompts")
        self.file_type = FILE_TYPES.get(int(meta.get("general.file_type", -1)), "unknown")
        self.bos_token = self._token_text(self._llm.token_bos())
        self.eos_token = self._token_text(self._llm.token_eos())

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self._llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def render(self, messages: list[dict]) -> str:
        return render_messages(messages, self.chat_template, bos_token=self.bos_token,
                               eos_token=self.eos_token)

    def tokenize(self, text: str) -> list[int]:
        # The chat template already places any BOS it wants; never let llama.cpp add a second one.
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def room_for(self, prompt_tokens: int) -> int:
        return self.settings.n_ctx - prompt_tokens

    def generate(self, messages: list[dict], max_tokens: int,
                 on_text: TokenCallback | None = None) -> Generation:
        tokens = self.tokenize(self.render(messages))
        room = self.room_for(len(tokens))
        if room < MIN_NEW_TOKENS:
            raise TmdError(f"prompt of {len(tokens)} tokens does not fit the context of "
                           f"{self.settings.n_ctx} tokens (raise --n-ctx)")
        max_tokens = min(max_tokens, room)
        self._llm.reset()  # each prompt stands alone; no KV reuse between unrelated prompts
        started = time.perf_counter()
        pieces, count, finish = [], 0, "length"
        for chunk in self._llm.create_completion(
                tokens, max_tokens=max_tokens, temperature=self.settings.temperature,
                repeat_penalty=self.settings.repeat_penalty, seed=self.settings.seed, stream=True):
            choice = chunk["choices"][0]
            count += 1
            if choice["text"]:
                pieces.append(choice["text"])
                if on_text:
                    on_text(choice["text"])
            finish = choice.get("finish_reason") or finish
        seconds = time.perf_counter() - started
        # llama.cpp emits one chunk per sampled token plus a final empty one carrying finish_reason.
        completion_tokens = max(0, self._llm.n_tokens - len(tokens)) or count
        return Generation("".join(pieces).strip(), len(tokens), completion_tokens, seconds, finish)

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def _open_llama(model: ModelRef, settings: GenerationSettings):
    from llama_cpp import Llama  # late: importing llama.cpp costs time the CLI's --help should not pay

    try:
        return Llama(model_path=str(model.path), n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                     n_batch=min(512, settings.n_ctx), seed=settings.seed, verbose=False)
    except (ValueError, RuntimeError) as e:
        raise TmdError(f"{model.path}: llama.cpp could not load it ({e})") from None


@dataclass
class Residency:
    """What one module's stay in memory cost: load time, peak RSS, RSS left behind after closing."""
    stage: str
    model: str
    file_type: str
    load_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_close_mb: float = 0.0


@contextmanager
def load_module(stage: str, model: ModelRef, settings: GenerationSettings
                ) -> Iterator[tuple[LoadedModule, Residency]]:
    """Load a module, yield it, and always close it, recording what its residency cost."""
    before = rss_mb()
    reset_peak_rss()
    module = LoadedModule(model, settings)
    residency = Residency(stage, model.name, module.file_type, module.load_seconds, rss_before_mb=before)
    try:
        yield module, residency
    finally:
        residency.peak_rss_mb = peak_rss_mb()
        module.close()
        residency.rss_after_close_mb = rss_mb()
