"""`--memory-budget`: the per-module quant mix with the best *measured* accuracy that fits.

Candidates are the configurations of this bundle already evaluated by `tmd eval` (results JSONL):
each one's modules are matched to the bundle's files by sha256, so a result counts only for the
exact files that produced it. Memory is the peak RSS measured during that evaluation (one module
resident at a time unless it ran with --keep-loaded); accuracy is compared on the questions every
mix that fits has answered, so a mix run on an easier subset does not win by that. Nothing is
extrapolated: a mix never evaluated is never picked.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import TmdError
from ..core.memory import MIB, parse_size
from ..core.paths import results_dir
from ..core.roles import ROLES
from ..runtime.bundle import Bundle, QuantChoice
from .rows import ConfigResult, load_results


@dataclass(frozen=True)
class Measured:
    """One quant mix of one system's roles, as evaluated: right or wrong per (dataset, question id)."""
    system: str
    per_role: tuple[tuple[str, str], ...]  # (role, quant), in ROLES order
    answers: dict[tuple[str, str], bool]
    peak_rss_mb: float

    @property
    def n(self) -> int:
        return len(self.answers)

    @property
    def accuracy(self) -> float:
        return sum(self.answers.values()) / self.n

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(sorted({dataset for dataset, _ in self.answers}))

    @property
    def quant_text(self) -> str:
        return QuantChoice.of(dict(self.per_role)).text

    def on(self, questions: set) -> "Measured":
        """The same mix scored on these questions only (so mixes run on different subsets compare fairly)."""
        return replace(self, answers={q: ok for q, ok in self.answers.items() if q in questions})

    def describe(self) -> str:
        return (f"{self.quant_text}: {100 * self.accuracy:.1f}% on {self.n} {'+'.join(self.datasets)} "
                f"questions, peak {self.peak_rss_mb:.0f} MiB")


def result_files(paths: list[Path] | tuple[Path, ...]) -> list[Path]:
    """Results JSONL files: the ones given (files or folders), else everything under results/."""
    files = []
    for path in paths or (results_dir(),):
        files += sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [f for f in files if f.is_file()]


def measured_mixes(bundle: Bundle, results: list[ConfigResult], system: str) -> list[Measured]:
    """Every evaluated mix of `system` whose modules are all files of this bundle, pooled over runs."""
    pooled: dict[tuple, list[ConfigResult]] = defaultdict(list)
    for result in results:
        if result.config["system"] != system or result.n == 0:
            continue
        mix = _bundle_mix(result.config["models"], bundle)
        if mix:
            pooled[mix].append(result)
    return [Measured(system, mix, _answers(runs), max(r.peak_rss_mb() for r in runs))
            for mix, runs in pooled.items()]


def _bundle_mix(models: dict, bundle: Bundle) -> tuple | None:
    """((role, quant), ...) when every module of a result is this bundle's file for that role."""
    mix = []
    for role in ROLES:
        files = bundle.roles[role].files
        if role not in models or not files:  # a role on the bundle's base has no quant to choose
            continue
        sha = models[role].get("sha256")
        quants = [quant for quant, entry in files.items() if entry.sha256 == sha]
        if not quants or models[role].get("adapter_sha256"):
            return None
        mix.append((role, quants[0]))
    return tuple(mix)


def _answers(runs: list[ConfigResult]) -> dict[tuple[str, str], bool]:
    return {(run.config["dataset"], qid): bool(record["correct"]) for run in runs for qid, record in run.records.items()}


def best_within(candidates: list[Measured], budget_mb: float) -> Measured | None:
    """Highest accuracy that fits, scored on the questions every fitting mix answered (all of each
    mix's questions when they share none); on a tie the smaller footprint."""
    fitting = [c for c in candidates if c.peak_rss_mb <= budget_mb]
    if not fitting:
        return None
    common = set.intersection(*(set(c.answers) for c in fitting))
    if common:
        fitting = [c.on(common) for c in fitting]
    return max(fitting, key=lambda c: (c.accuracy, -c.peak_rss_mb))


def pick_quant(bundle: Bundle, budget_text: str, systems: tuple[str, ...],
               result_paths: tuple[Path, ...] = ()) -> tuple[str, list[Measured]]:
    """The --quant text for the best measured mix per system within the budget, and the picks."""
    budget_mb = parse_size(budget_text) / MIB
    files = result_files(result_paths)
    where = ", ".join(str(p) for p in (result_paths or (results_dir(),)))
    results = load_results(files)
    per_role, picks = {}, []
    for system in systems:
        candidates = measured_mixes(bundle, results, system)
        if not candidates:
            raise TmdError(f"--memory-budget: no {system.upper()} results for bundle {bundle.name} in {where}; "
                           f"measure some first, e.g. tmd eval --bundle {bundle.where} --system {system} "
                           f"--quant f16,reasoner=q4_k_m")
        pick = best_within(candidates, budget_mb)
        if pick is None:
            smallest = min(candidates, key=lambda c: c.peak_rss_mb)
            raise TmdError(f"--memory-budget {budget_text}: no measured {system.upper()} mix of {bundle.name} "
                           f"fits; the smallest is {smallest.describe()}")
        per_role.update(dict(pick.per_role))
        picks.append(pick)
    return QuantChoice.of(per_role).text, picks


def quant_for_budget(source: Bundle, quant: str | None, memory_budget: str, systems, results_paths,
                     say=print) -> str:
    """What --memory-budget means on the command line: refuse it beside --quant or without a
    bundle, else pick and say what was picked and why."""
    if quant:
        raise TmdError("give --quant or --memory-budget, not both (the budget picks the quant)")
    if source.manifest_path is None:
        raise TmdError("--memory-budget needs --bundle: it picks among a bundle's quantized files")
    quant, picks = pick_quant(source, memory_budget, tuple(systems), tuple(results_paths))
    for pick in picks:
        say(f"--memory-budget {memory_budget}: {pick.system.upper()} runs {pick.describe()}")
    return quant
