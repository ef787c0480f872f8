"""Modules on llama.cpp: load a GGUF (plus an optional LoRA adapter), generate, score, and close.

`LoadedModule` is one GGUF held by llama.cpp; `LlamaLoader` is how a `tmd_local.runtime.pool.ModulePool`
makes them (the pool decides what stays in memory). What a generation is (settings, result,
cancellation) lives in tmd_local.runtime.generation; the checks on files before a load in tmd_local.runtime.integrity.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

from ..core.errors import TmdError
from ..core.gguf_file import FILE_TYPES
from ..core.memory import Footprint, estimate_footprint
from ..core.prompts import render_messages
from ..core.registry import ModelRef
from .generation import (
    Cancelled,
    Generation,
    GenerationSettings,
    StopCheck,
    TokenCallback,
    clamp_to_context,
    common_prefix,
    softmax_over,
)
from .integrity import check_lora


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


def _open_llama(model: ModelRef, settings: GenerationSettings):
    from llama_cpp import (
        Llama,  # late: importing llama.cpp costs time the CLI's --help should not pay
    )

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


class LlamaLoader:
    """GGUF files through llama.cpp: the loader every pool uses unless told otherwise."""

    def footprint(self, ref: ModelRef, settings: GenerationSettings) -> Footprint:
        return estimate_footprint(ref.path, settings.n_ctx, settings.n_batch, getattr(ref, "adapter", None))

    def adapter_footprint(self, adapter: Path) -> Footprint:
        return Footprint(0, 0, 0, 0, adapter_bytes=adapter.stat().st_size)

    def load(self, ref: ModelRef, settings: GenerationSettings) -> LoadedModule:
        return LoadedModule(ref, settings)
