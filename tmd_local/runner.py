"""Modules on llama.cpp: load a GGUF (plus an optional LoRA adapter), generate, close, and measure.

`ModulePool` decides what stays in memory. By default exactly one module is resident: each stage
loads its module, runs, closes it and records how much memory came back. With keep_loaded, modules
stay resident across stages and questions while the memory budget allows; a file used by several
roles is loaded once, and roles that differ only by a LoRA adapter swap the adapter on the loaded
base instead of reloading it. The pool's loader decides what a module is: llama.cpp (LlamaLoader)
unless a test hands in `tmd_local.fake.FakeLoader`.
"""

from __future__ import annotations

import ctypes
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

from .errors import TmdError
from .gguf_file import FILE_TYPES, read_gguf_header
from .memory import (MIB, Footprint, MemoryBudget, estimate_footprint, peak_rss_mb, release_freed,
                     reset_peak_rss, rss_mb)
from .prompts import render_messages
from .registry import ModelRef, file_sha256

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


class LoadedModule:
    """A GGUF held by llama.cpp; renders prompts with the model's own chat template."""

    def __init__(self, model: ModelRef, settings: GenerationSettings):
        self.model = model
        self.settings = settings
        self.adapter: Path | None = None
        self._adapters: dict[Path, object] = {}  # initialized LoRA adapters, by path
        started = time.perf_counter()
        self._llm = _open_llama(model, settings)
        try:
            meta = self._llm.metadata
            # A base model without one can still score options (the mc systems); render() refuses.
            self.chat_template = meta.get("tokenizer.chat_template") or None
            self.file_type = FILE_TYPES.get(int(meta.get("general.file_type", -1)), "unknown")
            self.bos_token = self._token_text(self._llm.token_bos())
            self.eos_token = self._token_text(self._llm.token_eos())
            if getattr(model, "adapter", None):
                self.set_adapter(model.adapter)
        except BaseException:
            self.close()
            raise
        self.load_seconds = time.perf_counter() - started

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self._llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    # --- LoRA adapters: llama.cpp applies them per context, so a loaded base can switch cheaply.
    def set_adapter(self, path: Path | None) -> float:
        """Apply the LoRA adapter at `path` (None: the bare base model); returns seconds taken."""
        import llama_cpp

        started = time.perf_counter()
        if path == self.adapter:
            return 0.0
        ctx = self._llm._ctx.ctx
        if path is None:
            rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            if path not in self._adapters:
                check_lora(path, self.model.path)
                handle = llama_cpp.llama_adapter_lora_init(self._llm._model.model, str(path).encode())
                if not handle:
                    raise TmdError(f"{path}: llama.cpp could not load it as a LoRA adapter for "
                                   f"{self.model.path.name} (wrong base model or not a LoRA GGUF?)")
                self._adapters[path] = handle
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[path])
            rc = llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise TmdError(f"{path or self.model.path}: llama.cpp refused to set the adapter (code {rc})")
        self.reset()  # the KV cache was computed with the previous adapter
        self.adapter = path
        return time.perf_counter() - started

    def render(self, messages: list[dict]) -> str:
        if self.chat_template is None:
            raise TmdError(f"{self.model.path}: the GGUF has no tokenizer.chat_template; tmd needs the "
                           "model's chat template to build prompts (without one, only mc and "
                           "mc-gold-facts can run)")
        return render_messages(messages, self.chat_template, bos_token=self.bos_token,
                               eos_token=self.eos_token)

    def tokenize(self, text: str) -> list[int]:
        # The chat template already places any BOS it wants; never let llama.cpp add a second one.
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def room_for(self, prompt_tokens: int) -> int:
        return self.settings.n_ctx - prompt_tokens

    def generate(self, messages: list[dict], max_tokens: int, on_text: TokenCallback | None = None,
                 should_stop: StopCheck | None = None, sampling: GenerationSettings | None = None
                 ) -> Generation:
        """Greedy (or seeded) completion; should_stop is polled after every token and raises Cancelled.
        `sampling` (default: the settings the module was loaded with) gives temperature, penalty, seed."""
        sampling = sampling or self.settings
        tokens = self.tokenize(self.render(messages))
        max_tokens = clamp_to_context(max_tokens, len(tokens), self.settings.n_ctx)
        if not sampling.prefix_cache:
            self.reset()  # evaluate the whole prompt again
        # Otherwise llama-cpp-python keeps the longest common prefix of the cached tokens and this
        # prompt, and evaluates only what follows it.
        started = time.perf_counter()
        pieces, count, finish = [], 0, "length"
        stream = self._llm.create_completion(
            tokens, max_tokens=max_tokens, temperature=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty, seed=sampling.seed, stream=True)
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                count += 1
                if choice["text"]:
                    pieces.append(choice["text"])
                    if on_text:
                        on_text(choice["text"])
                finish = choice.get("finish_reason") or finish
                if should_stop and should_stop():
                    raise Cancelled()
        finally:
            stream.close()
        seconds = time.perf_counter() - started
        # Sampled tokens are evaluated (and counted in n_tokens) only when another one follows: a stop
        # on EOS leaves out the EOS, which is no output; a stop at max_tokens leaves out a real token.
        evaluated = max(0, self._llm.n_tokens - len(tokens))
        completion_tokens = evaluated + (finish == "length") if evaluated else count
        return Generation("".join(pieces).strip(), len(tokens), completion_tokens, seconds, finish, tokens,
                          max_tokens)

    def reset(self) -> None:
        """Forget the KV cache: the next prompt is evaluated from its first token."""
        self._llm.reset()

    def has_adapter(self, path: Path) -> bool:
        """Whether the adapter at `path` is already initialized (a swap to it reads no file)."""
        return path in self._adapters

    # --- scoring: probabilities read from the model instead of parsed from its text -------------
    def option_probabilities(self, prompt_ids: list[int], reasoning: str, letters: list[str]) -> dict[str, float]:
        """P(letter | prompt + reasoning + "\nFinal Answer:"), normalized over the options.

        Run right after the reasoning was generated, so the KV cache already holds prompt +
        reasoning and only the appended answer line is evaluated. Reasoning that filled the context
        loses its last tokens to make room for the answer line."""
        cue = self.tokenize(ANSWER_CUE)
        room = max(0, self.settings.n_ctx - len(prompt_ids) - len(cue))
        tokens = prompt_ids + self.tokenize(reasoning)[:room] + cue
        logits = self._logits_after(tokens)
        ids = self._letter_token_ids(letters)
        return softmax_over({letter: float(logits[i]) for letter, i in ids.items()})

    def option_probabilities_before_reasoning(self, prompt_ids: list[int], letters: list[str]
                                              ) -> dict[str, float]:
        """P(letter | prompt + "\nFinal Answer:"): the answer the module would give without reasoning.
        Run after option_probabilities, so the cache holds the prompt and only the cue is evaluated."""
        return self.option_probabilities(prompt_ids, "", letters)

    def continuation_logprobs(self, context: str, continuations: list[str]) -> list[tuple[float, int]]:
        """(sum of log-probabilities, token count) of each continuation after `context`, as
        lm-evaluation-harness scores multiple choice; the context is evaluated once."""
        import numpy as np

        context_ids = self._llm.tokenize(context.encode("utf-8"), add_bos=True, special=False)
        results = []
        for continuation in continuations:
            whole = self._llm.tokenize((context + continuation).encode("utf-8"), add_bos=True, special=False)
            common = common_prefix(context_ids, whole)
            if common == 0:
                raise TmdError("multiple choice: the context tokenizes to nothing")
            total, position = 0.0, common
            logits = self._logits_after(whole[:common])
            for token in whole[common:]:
                shifted = logits - logits.max()
                total += float(shifted[token] - np.log(np.exp(shifted).sum()))
                position += 1
                if position < len(whole):
                    logits = self._logits_after(whole[:position])
            results.append((total, len(whole) - common))
        return results

    def _logits_after(self, tokens: list[int]):
        """Logits for the token after `tokens`, evaluating only what the KV cache does not hold
        (always: the reasoning's own cache is what the answer is read from, with or without
        prefix_cache, which decides only whether a new prompt reuses an old one)."""
        if len(tokens) > self.settings.n_ctx:
            raise TmdError(f"scoring needs {len(tokens)} tokens, more than the context of "
                           f"{self.settings.n_ctx} (raise --n-ctx)")
        import numpy as np

        llm = self._llm
        cached = common_prefix(list(llm.input_ids[:llm.n_tokens]), tokens)
        cached = min(cached, len(tokens) - 1)  # the last token is evaluated again: its logits are needed
        llm.n_tokens = cached
        llm.eval(tokens[cached:])  # drops the cache past `cached`, decodes the rest
        # llama-cpp-python keeps no logits unless logits_all; the context holds the last token's row.
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()

    def _letter_token_ids(self, letters: list[str]) -> dict[str, int]:
        """The token each option letter starts with after "Final Answer:" (" B" is one token), read
        off the whole answer line: alone, " B" is "▁" + "▁B" in a SentencePiece vocabulary (Phi-3)."""
        cue = self.tokenize(ANSWER_CUE)
        ids = {letter: self.tokenize(f"{ANSWER_CUE} {letter}")[len(cue)] for letter in letters}
        if len(set(ids.values())) != len(ids):
            raise TmdError(f"{self.model.path.name}: option letters {letters} share a first token; "
                           "their probabilities cannot be told apart")
        return ids

    def close(self) -> None:
        if self._llm is None:
            return
        if self._adapters:
            import llama_cpp

            llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, None, 0, None)
            for handle in self._adapters.values():
                llama_cpp.llama_adapter_lora_free(handle)
            self._adapters.clear()
        self._llm.close()
        self._llm = None


ANSWER_CUE = "\nFinal Answer:"  # the prompts' answer line; the letter follows as " B"


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


def _open_llama(model: ModelRef, settings: GenerationSettings):
    from llama_cpp import Llama  # late: importing llama.cpp costs time the CLI's --help should not pay

    try:
        # n_threads_batch follows n_threads: llama-cpp-python would otherwise start one prompt thread
        # per core, which spin against whatever else shares the machine.
        eos = getattr(model, "eos_token_id", None)
        overrides = {"tokenizer.ggml.eos_token_id": eos} if eos is not None else None
        return Llama(model_path=str(model.path), n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                     n_threads_batch=settings.n_threads, n_batch=settings.n_batch, seed=settings.seed,
                     kv_overrides=overrides, verbose=False)
    except (ValueError, RuntimeError) as e:
        raise TmdError(f"{model.path}: llama.cpp could not load it ({e})") from None


@dataclass
class Residency:
    """What one module's use cost: how it got into memory (load, reuse or adapter swap), how long
    that took, the estimate checked against the budget, peak RSS, and RSS after closing it."""
    stage: str
    model: str
    file_type: str
    load_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_close_mb: float = 0.0
    how: str = "load"  # load | reuse | swap
    adapter: str | None = None
    estimated_mb: float = 0.0
    kept_loaded: bool = False

    def to_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@contextmanager
def load_module(stage: str, model: ModelRef, settings: GenerationSettings
                ) -> Iterator[tuple[LoadedModule, Residency]]:
    """Load a module, yield it, and always close it, recording what its residency cost."""
    with ModulePool(settings).use(stage, model) as pair:
        yield pair


# ggml types llama.cpp's loader accepts in a LoRA GGUF but cannot multiply with on CPU: an f64 adapter
# loads fine and then crashes the process in the first matmul, so these are refused with a message.
LORA_REFUSED_TYPES = {24: "i8", 25: "i16", 26: "i32", 27: "i64", 28: "f64"}


def check_lora(adapter: Path, base: Path) -> None:
    """A LoRA GGUF for the base's architecture, with tensor types llama.cpp computes with."""
    header = read_gguf_header(adapter, tensors=True)
    if header.get("general.type") != "adapter" or header.get("adapter.type") != "lora":
        raise TmdError(f"{adapter}: not a LoRA adapter GGUF (general.type={header.get('general.type')!r}, "
                       f"adapter.type={header.get('adapter.type')!r})")
    arch, base_arch = header.get("general.architecture"), read_gguf_header(base).get("general.architecture")
    if arch != base_arch:
        raise TmdError(f"{adapter}: adapter for architecture {arch!r}, but {base.name} is {base_arch!r}")
    bad = {name: t for name, t in header["tensors"].items() if t in LORA_REFUSED_TYPES}
    if bad:
        name, code = next(iter(bad.items()))
        raise TmdError(f"{adapter}: tensor {name} is {LORA_REFUSED_TYPES[code]}, which llama.cpp cannot "
                       f"compute with ({len(bad)} such tensors); export the adapter as f32/f16/q8_0")


# --- integrity -------------------------------------------------------------------------------

def verify_files(ref: ModelRef) -> None:
    """Check a module's files against what its bundle promised: size first (a truncated copy is
    named as such), then sha256 (cached per path+size+mtime, so each file is hashed once)."""
    if not isinstance(ref, ModuleRef):
        return
    verify_file(ref.path, ref.size, ref.sha256_expected, ref.source or str(ref.path))
    if ref.adapter is not None:
        verify_file(ref.adapter, None, ref.adapter_sha256_expected, (ref.source or "") + " adapter")


def verify_file(path: Path, size: int | None, sha256: str | None, where: str) -> None:
    """`path` exists, has `size` bytes and hashes to `sha256` (each when given); `where` names the promise."""
    try:
        actual = path.stat().st_size
    except OSError:
        raise TmdError(f"{path}: missing (named by {where})") from None
    if size is not None and actual != size:
        word = "truncated" if actual < size else "larger than expected"
        raise TmdError(f"{path}: {word}: {actual} bytes, the manifest says {size} ({where})")
    if sha256 is not None and file_sha256(path) != sha256.lower():
        raise TmdError(f"{path}: sha256 mismatch: file has {file_sha256(path)[:12]}..., the manifest "
                       f"says {sha256[:12]}... ({where}); re-export or re-copy the bundle")


# --- loaders: what a pool turns a ModelRef into ---------------------------------------------------

class Module(Protocol):
    """What the pipeline and the pool use of a loaded module (LoadedModule, or a fake in tests)."""
    model: ModelRef
    settings: GenerationSettings
    adapter: Path | None
    file_type: str
    load_seconds: float

    def generate(self, messages: list[dict], max_tokens: int, on_text: TokenCallback | None = None,
                 should_stop: StopCheck | None = None, sampling: GenerationSettings | None = None
                 ) -> Generation: ...
    def option_probabilities(self, prompt_ids: list[int], reasoning: str, letters: list[str]
                             ) -> dict[str, float]: ...
    def option_probabilities_before_reasoning(self, prompt_ids: list[int], letters: list[str]
                                              ) -> dict[str, float]: ...
    def continuation_logprobs(self, context: str, continuations: list[str]) -> list[tuple[float, int]]: ...
    def render(self, messages: list[dict]) -> str: ...
    def tokenize(self, text: str) -> list[int]: ...
    def room_for(self, prompt_tokens: int) -> int: ...
    def reset(self) -> None: ...
    def set_adapter(self, path: Path | None) -> float: ...
    def has_adapter(self, path: Path) -> bool: ...
    def close(self) -> None: ...


class Loader(Protocol):
    """Turns a role's ModelRef into a Module, and says what loading it would cost in memory."""

    def footprint(self, ref: ModelRef, settings: GenerationSettings) -> Footprint: ...
    def adapter_footprint(self, adapter: Path) -> Footprint: ...
    def load(self, ref: ModelRef, settings: GenerationSettings) -> Module: ...


class LlamaLoader:
    """GGUF files through llama.cpp: the loader every pool uses unless told otherwise."""

    def footprint(self, ref: ModelRef, settings: GenerationSettings) -> Footprint:
        return estimate_footprint(ref.path, settings.n_ctx, settings.n_batch, getattr(ref, "adapter", None))

    def adapter_footprint(self, adapter: Path) -> Footprint:
        return Footprint(0, 0, 0, 0, adapter_bytes=adapter.stat().st_size)

    def load(self, ref: ModelRef, settings: GenerationSettings) -> LoadedModule:
        return LoadedModule(ref, settings)


# --- residency -------------------------------------------------------------------------------

def _eos_of(ref: ModelRef) -> int | None:
    return getattr(ref, "eos_token_id", None)


class ModulePool:
    """What is in memory, and the rules for loading more.

    keep_loaded=False: one module at a time; every use loads, runs and closes (RSS measured after).
    keep_loaded=True: modules stay until close_all(); the least recently used are closed first
    when the budget would be exceeded; same file = one load; adapters are swapped on a loaded base.
    `loader` makes the modules (default: llama.cpp); tests hand in `tmd_local.fake.FakeLoader`.
    """

    def __init__(self, settings: GenerationSettings, *, budget: MemoryBudget | None = None,
                 keep_loaded: bool = False, verify: bool = True, loader: Loader | None = None):
        self.settings = settings
        self.budget = budget or MemoryBudget()
        self.keep_loaded = keep_loaded
        self.verify = verify
        self.loader = loader or LlamaLoader()
        self._loaded: dict[Path, Module] = {}  # base file -> module, least recently used first
        self._uses: dict[Path, list[Residency]] = {}  # base file -> its uses since it was loaded
        self.history: list[Residency] = []

    @property
    def resident(self) -> list[str]:
        """Names of the modules in memory now, least recently used first."""
        return [module.model.name for module in self._loaded.values()]

    @contextmanager
    def use(self, stage: str, ref: ModelRef) -> Iterator[tuple[Module, Residency]]:
        module, residency = self._acquire(stage, ref)
        try:
            yield module, residency
        finally:
            residency.peak_rss_mb = max(residency.peak_rss_mb, peak_rss_mb())
            if not self.keep_loaded:
                self._close(ref.path)

    def _acquire(self, stage: str, ref: ModelRef) -> tuple[Module, Residency]:
        if self.verify:
            verify_files(ref)
        adapter = getattr(ref, "adapter", None)
        module = self._loaded.pop(ref.path, None)
        if module is not None and _eos_of(module.model) != _eos_of(ref):  # loaded with another EOS
            self._loaded[ref.path] = module
            self._close(ref.path)
            module = None
        if module is not None:  # already resident: reuse it, swapping the adapter if needed
            self._loaded[ref.path] = module  # now the most recently used
            if adapter is not None and not module.has_adapter(adapter):
                self.budget.check(f"{stage} (adapter {adapter.name})", self.loader.adapter_footprint(adapter),
                                  rss_mb())
            before = rss_mb()
            reset_peak_rss()
            swap = adapter != module.adapter
            seconds = module.set_adapter(adapter)
            residency = Residency(stage, ref.name, module.file_type, seconds, rss_before_mb=before,
                                  how="swap" if swap else "reuse", kept_loaded=True,
                                  adapter=adapter.name if adapter else None)
        else:
            footprint = self.loader.footprint(ref, self.settings)
            self._make_room(footprint)
            what = f"{stage} ({ref.path.name}{' + ' + adapter.name if adapter else ''})"
            self.budget.check(what, footprint, rss_mb())
            before = rss_mb()
            reset_peak_rss()
            module = self.loader.load(ref, self.settings)
            self._loaded[ref.path] = module
            self._uses[ref.path] = []
            residency = Residency(stage, ref.name, module.file_type, module.load_seconds,
                                  rss_before_mb=before, estimated_mb=footprint.total_bytes / MIB,
                                  kept_loaded=self.keep_loaded, adapter=adapter.name if adapter else None)
        self._uses[ref.path].append(residency)
        self.history.append(residency)
        return module, residency

    def _make_room(self, footprint: Footprint) -> None:
        """One at a time: close everything. keep_loaded: close least recently used until it fits."""
        for path in list(self._loaded):
            if self.keep_loaded and self.budget.fits(footprint, rss_mb()):
                return
            self._close(path)

    def _close(self, path: Path) -> None:
        module = self._loaded.pop(path, None)
        if module is None:
            return
        module.close()
        release_freed()
        after = rss_mb()
        for residency in self._uses.pop(path, []):
            residency.rss_after_close_mb = after

    def close_all(self) -> None:
        for path in list(self._loaded):
            self._close(path)

    def __enter__(self) -> "ModulePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close_all()
