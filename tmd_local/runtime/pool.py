"""What stays in memory: `ModulePool` loads, reuses and closes modules under a memory budget.

By default exactly one module is resident: each stage loads its module, runs, closes it and records
how much memory came back. With keep_loaded, modules stay resident across stages and questions while
the memory budget allows; a file used by several roles is loaded once, and roles that differ only by
a LoRA adapter swap the adapter on the loaded base instead of reloading it. The pool's loader decides
what a module is: llama.cpp (tmd_local.runtime.runner.LlamaLoader) unless a test hands in
`tmd_local.runtime.fake.FakeLoader`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Protocol

from ..core.memory import (
    MIB,
    Footprint,
    MemoryBudget,
    peak_rss_mb,
    release_freed,
    reset_peak_rss,
    rss_mb,
)
from ..core.registry import ModelRef
from .generation import Generation, GenerationSettings, StopCheck, TokenCallback
from .integrity import verify_files
from .runner import LlamaLoader, LoadedModule

# --- what a pool holds, and what makes it ---------------------------------------------------

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


# --- residency -------------------------------------------------------------------------------

def _eos_of(ref: ModelRef) -> int | None:
    return getattr(ref, "eos_token_id", None)


class ModulePool:
    """What is in memory, and the rules for loading more.

    keep_loaded=False: one module at a time; every use loads, runs and closes (RSS measured after).
    keep_loaded=True: modules stay until close_all(); the least recently used are closed first
    when the budget would be exceeded; same file = one load; adapters are swapped on a loaded base.
    `loader` makes the modules (default: llama.cpp); tests hand in `tmd_local.runtime.fake.FakeLoader`.
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
            residency = self._reuse(stage, ref, module, adapter)
        else:
            module, residency = self._load(stage, ref, adapter)
        self._uses[ref.path].append(residency)
        self.history.append(residency)
        return module, residency

    def _reuse(self, stage: str, ref: ModelRef, module: Module, adapter: Path | None) -> Residency:
        """Make a resident module the most recently used, with `adapter` applied."""
        self._loaded[ref.path] = module  # now the most recently used
        if adapter is not None and not module.has_adapter(adapter):
            self.budget.check(f"{stage} (adapter {adapter.name})", self.loader.adapter_footprint(adapter),
                              rss_mb())
        before = rss_mb()
        reset_peak_rss()
        swap = adapter != module.adapter
        seconds = module.set_adapter(adapter)
        return Residency(stage, ref.name, module.file_type, seconds, rss_before_mb=before,
                         how="swap" if swap else "reuse", kept_loaded=True,
                         adapter=adapter.name if adapter else None)

    def _load(self, stage: str, ref: ModelRef, adapter: Path | None) -> tuple[Module, Residency]:
        """Load a module that is not resident, after making room for it within the budget."""
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


@contextmanager
def load_module(stage: str, model: ModelRef, settings: GenerationSettings
                ) -> Iterator[tuple[LoadedModule, Residency]]:
    """Load a module, yield it, and always close it, recording what its residency cost."""
    with ModulePool(settings).use(stage, model) as pair:
        yield pair
