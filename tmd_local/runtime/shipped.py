"""The distilled students that ship in the box: models/openbook-135m/ in the checkout, LoRA adapters in
GGUF over the embedded base (its sha256 in the manifest, checked before load), with the accuracy
measured for the same adapters (`measured` in the manifest, written by scripts/ship_bundle.py from
the results files). `tmd ask`, `tmd app` and `tmd serve` use it for four-option questions asked of
the embedded default model unless told otherwise (a --bundle, another --model, --zero-shot); `tmd demo`
shows it beside the zero-shot model. Which source answers a question is decided here (`pick`), once
for every front end."""

from __future__ import annotations

from pathlib import Path

SHIPPED_NAME = "openbook-135m"
SHIPPED_OPTIONS = 4  # OpenBookQA-style: four options
SHIPPED_SYSTEMS = ("tmd", "drd")  # what the students were distilled for (mc scores as before)


def shipped_bundle() -> Path | None:
    """The shipped bundle's folder, or None when this install has none (a wheel without models/)."""
    folder = Path(__file__).resolve().parents[2] / "models" / SHIPPED_NAME
    return folder if (folder / "manifest.json").is_file() else None


def suits(options: dict) -> bool:
    return len(options) == SHIPPED_OPTIONS


def shipped_default(model=None, bundle=None, zero_shot: bool = False) -> Path | None:
    """The shipped bundle's folder when a command runs the embedded default model (no --bundle, no
    other --model, no --zero-shot) and this install has one; else None: run what was asked."""
    from ..core.registry import DEFAULT_MODEL

    if bundle or zero_shot or (model or DEFAULT_MODEL) != DEFAULT_MODEL:
        return None
    return shipped_bundle()


def shipped_students(model=None, bundle=None, zero_shot: bool = False):
    """The shipped students' Bundle when shipped_default gives their folder; else None."""
    from .bundle import load_bundle

    folder = shipped_default(model, bundle, zero_shot)
    return load_bundle(folder) if folder is not None else None


def pick(system: str, options: dict, default, shipped):
    """Which source answers a question: `shipped` (the distilled students, any form: bundle, module
    set, target) for a TMD or DRD question with four options, else `default`. None as `shipped`
    (a --bundle, --zero-shot, an explicit choice) always gives `default`."""
    if shipped is not None and system in SHIPPED_SYSTEMS and suits(options):
        return shipped
    return default


def measured_lines(bundle) -> list[str]:
    """One line per measured system: accuracy, CI, n, and what produced it."""
    info = bundle.manifest if hasattr(bundle, "manifest") else {}
    lines = []
    for key, m in (info.get("measured") or {}).items():
        dataset, split, system = key.split("/")
        lines.append(f"{system.upper()} on {dataset} {split}: {m['accuracy']:.1f}% "
                     f"(95% CI {m['ci95'][0]:.1f}-{m['ci95'][1]:.1f}, n={m['n']}), {m['measured_on']}")
    return lines
