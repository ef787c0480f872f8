"""A scripted stand-in for llama.cpp modules, so the pipeline, `tmd eval` and the app run in tests
without a GGUF (as simonw/llm tests its commands with a queue-driven mock model).

    loader = FakeLoader(replies=["1. What do plants make food from?", "Sunlight.", "B is right."],
                        option_probs=[{"A": 0.1, "B": 0.9}])
    traces = run("tmd", [question], loader.module_set(), pool=loader.pool())
    loader.prompts[0].messages   # exactly what the Analyzer was asked

Replies, option probabilities and continuation log-probabilities are each a *script*: a list
consumed in order (an item may itself be a function of the request), or a function of the request.
A request the script has no answer for fails the test loudly (`ScriptExhausted`), so a pipeline
making more calls than expected cannot pass silently. Text is split into whitespace-led pieces, one
"token" each, so token counts, max_tokens cuts, streaming and the prefix cache behave like the real
runner's; time comes from `seconds_per_token`, not the clock, so figures are reproducible.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

from ..core.memory import Footprint
from ..core.registry import ModelRef
from ..core.roles import ROLES
from .generation import (
    Cancelled,
    Generation,
    GenerationSettings,
    StopCheck,
    TokenCallback,
    clamp_to_context,
    common_prefix,
)
from .pipeline import ModuleSet
from .pool import ModulePool

_PIECE = re.compile(r"\s*\S+|\s+")  # a word with the whitespace before it: one fake token


class ScriptExhausted(AssertionError):
    """The fake was asked for something its script does not answer: the test expected fewer calls."""


@dataclass
class FakePrompt:
    """One generation the fake made: the prompt as the pipeline built it, and what came back."""
    model: str                  # the ModelRef's name (FakeLoader.module_set names them by role)
    adapter: str | None
    messages: list[dict]
    text: str                   # the messages rendered with the fake chat template
    prompt_ids: list[int]
    max_tokens: int             # after the clamp to the context
    reused_tokens: int          # prompt tokens the prefix cache already held (0 after a reset)
    reply: str = ""             # the generated text (cut at max_tokens, stripped)


@dataclass
class FakeScoring:
    """One scoring request: option letters after reasoning (options), or continuations (mc)."""
    model: str
    kind: str                   # "options" | "continuations"
    context: str                # the reasoning scored (options) or the mc context
    choices: list[str]          # letters (options) or continuation texts (mc)
    result: object = None


Script = Union[list, tuple, Callable, None]


class _Script:
    """A queue consumed in order, then a function of the request (if there is one)."""

    def __init__(self, what: str, script, default: Callable | None = None):
        self.what = what
        if callable(script):
            self.queue, self.function = deque(), script
        else:
            self.queue, self.function = deque(script or ()), default

    def next(self, *request):
        if self.queue:
            item = self.queue.popleft()
            return item(*request) if callable(item) else item
        if self.function is not None:
            return self.function(*request)
        raise ScriptExhausted(f"fake module: no scripted {self.what} left for {_short(request)}")

    def add(self, items) -> None:
        self.queue.extend(items)


def _short(request: tuple) -> str:
    text = repr(request[0] if len(request) == 1 else request)
    return text if len(text) < 300 else text[:300] + "..."


def uniform_probabilities(reasoning: str, letters: list[str]) -> dict[str, float]:
    return {letter: 1 / len(letters) for letter in letters}


class FakeLoader:
    """Makes FakeModules for a ModulePool and keeps what every module saw: `prompts` (each
    generation), `scorings`, `loads` (names, in load order) and `open_modules` (not yet closed).

    replies: texts, or functions of the FakePrompt (its `reply` still empty), or one such function.
    option_probs: dicts letter -> probability (normalized over the letters asked), or functions of
        (reasoning, letters); default: uniform, so the first letter wins.
    probs_before_reasoning: the same for the answer read right after the prompt (functions of letters).
    logprobs: lists of (log-probability, tokens) per continuation, or functions of (context,
        continuations); default: -1 per token, so the shortest continuation wins.
    """

    def __init__(self, replies: Script = None, *, option_probs: Script = None, logprobs: Script = None,
                 probs_before_reasoning: Script = None,
                 seconds_per_token: float = 0.01, load_seconds: float = 0.0, footprint_bytes: int = 0,
                 file_type: str = "fake"):
        self.replies = _Script("reply", replies)
        self.option_probs = _Script("option probabilities", option_probs, uniform_probabilities)
        self.probs_before_reasoning = _Script("option probabilities before reasoning", probs_before_reasoning,
                                              lambda letters: uniform_probabilities("", letters))
        self.logprobs = _Script("continuation log-probabilities", logprobs, self._token_count_logprobs)
        self.seconds_per_token, self.load_seconds = seconds_per_token, load_seconds
        self.footprint_bytes, self.file_type = footprint_bytes, file_type
        self.prompts: list[FakePrompt] = []
        self.scorings: list[FakeScoring] = []
        self.loads: list[str] = []
        self.open_modules: list[FakeModule] = []
        self._vocabulary: dict[str, int] = {}  # one for all modules: they share a tokenizer

    # --- scripting
    def enqueue(self, *replies) -> "FakeLoader":
        self.replies.add(replies)
        return self

    def enqueue_probs(self, *probabilities: dict[str, float]) -> "FakeLoader":
        self.option_probs.add(probabilities)
        return self

    def prompts_for(self, model: str) -> list[FakePrompt]:
        return [p for p in self.prompts if p.model == model]

    # --- what a ModulePool asks of its loader
    def footprint(self, ref: ModelRef, settings: GenerationSettings) -> Footprint:
        return Footprint(self.footprint_bytes, 0, 0, 0, n_ctx=settings.n_ctx)

    def adapter_footprint(self, adapter: Path) -> Footprint:
        return Footprint(0, 0, 0, 0)

    def load(self, ref: ModelRef, settings: GenerationSettings) -> "FakeModule":
        module = FakeModule(ref, settings, self)
        self.loads.append(ref.name)
        self.open_modules.append(module)
        return module

    # --- conveniences for tests
    def pool(self, settings: GenerationSettings | None = None, **options) -> ModulePool:
        return ModulePool(settings or GenerationSettings(n_threads=1), loader=self, **options)

    @staticmethod
    def module_set(label: str = "fake") -> ModuleSet:
        """One fake file per role, named after it, so `prompts_for("reasoner")` finds its prompts."""
        return ModuleSet(**{role: ModelRef(Path(f"fake/{role}.gguf"), role) for role in ROLES}, label=label)

    # --- the fake tokenizer
    def tokenize(self, text: str) -> list[int]:
        return [self._vocabulary.setdefault(piece, len(self._vocabulary)) for piece in pieces(text)]

    def _token_count_logprobs(self, context: str, continuations: list[str]) -> list[tuple[float, int]]:
        return [(-float(len(pieces(c))), len(pieces(c))) for c in continuations]


def pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


class FakeModule:
    """What LoadedModule offers the pipeline and the pool, answering from its loader's scripts."""

    def __init__(self, model: ModelRef, settings: GenerationSettings, loader: FakeLoader):
        self.model, self.settings, self.loader = model, settings, loader
        self.file_type, self.load_seconds = loader.file_type, loader.load_seconds
        self.adapter: Path | None = None
        self.closed = False
        self._adapters: set[Path] = set()
        self._cache: list[int] = []  # the tokens the "KV cache" holds
        if getattr(model, "adapter", None):
            self.set_adapter(model.adapter)

    def render(self, messages: list[dict]) -> str:
        return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"

    def tokenize(self, text: str) -> list[int]:
        return self.loader.tokenize(text)

    def room_for(self, prompt_tokens: int) -> int:
        return self.settings.n_ctx - prompt_tokens

    def generate(self, messages: list[dict], max_tokens: int, on_text: TokenCallback | None = None,
                 should_stop: StopCheck | None = None, sampling: GenerationSettings | None = None
                 ) -> Generation:
        self._check_open()
        sampling = sampling or self.settings
        text = self.render(messages)
        tokens = self.tokenize(text)
        max_tokens = clamp_to_context(max_tokens, len(tokens), self.settings.n_ctx)
        if not sampling.prefix_cache:
            self.reset()
        prompt = FakePrompt(self.model.name, self.adapter.name if self.adapter else None,
                            [dict(m) for m in messages], text, tokens, max_tokens,
                            common_prefix(self._cache, tokens))
        self.loader.prompts.append(prompt)
        reply = pieces(self.loader.replies.next(prompt))
        out, finish = reply[:max_tokens], "length" if len(reply) > max_tokens else "stop"
        for piece in out:
            if on_text:
                on_text(piece)
            if should_stop and should_stop():
                raise Cancelled()
        self._cache = tokens + self.tokenize("".join(out))
        prompt.reply = "".join(out).strip()
        return Generation(prompt.reply, len(tokens), len(out), len(out) * self.loader.seconds_per_token,
                          finish, tokens, max_tokens)

    def option_probabilities(self, prompt_ids: list[int], reasoning: str, letters: list[str]) -> dict[str, float]:
        self._check_open()
        scored = self.loader.option_probs.next(reasoning, list(letters))
        if set(scored) != set(letters):
            raise ScriptExhausted(f"fake module: scripted option probabilities {scored} are not for "
                                  f"the letters asked, {letters}")
        total = sum(scored.values())
        # as scripted when they already sum to 1 (dividing would add float noise to exact figures)
        result = {letter: scored[letter] / (1.0 if abs(total - 1) < 1e-9 else total) for letter in letters}
        self.loader.scorings.append(FakeScoring(self.model.name, "options", reasoning, list(letters), result))
        return result

    def option_probabilities_before_reasoning(self, prompt_ids: list[int], letters: list[str]
                                              ) -> dict[str, float]:
        self._check_open()
        scored = self.loader.probs_before_reasoning.next(list(letters))
        return {letter: scored[letter] for letter in letters}

    def continuation_logprobs(self, context: str, continuations: list[str]) -> list[tuple[float, int]]:
        self._check_open()
        result = list(self.loader.logprobs.next(context, list(continuations)))
        if len(result) != len(continuations):
            raise ScriptExhausted(f"fake module: {len(result)} scripted log-probabilities for "
                                  f"{len(continuations)} continuations")
        self.loader.scorings.append(FakeScoring(self.model.name, "continuations", context,
                                                list(continuations), result))
        return result

    def reset(self) -> None:
        self._cache = []

    def set_adapter(self, path: Path | None) -> float:
        if path != self.adapter:
            if path is not None:
                self._adapters.add(path)
            self.adapter = path
            self.reset()
        return 0.0

    def has_adapter(self, path: Path) -> bool:
        return path in self._adapters

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loader.open_modules.remove(self)

    def _check_open(self) -> None:
        if self.closed:  # the pool handed out a module it had already closed
            raise AssertionError(f"fake module {self.model.name}: used after close()")
