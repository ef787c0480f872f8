"""The distilled students that ship in the box: models/openbook-135m/ in the checkout, LoRA adapters in
GGUF over the embedded base (its sha256 in the manifest, checked before load), with the accuracy
measured for the same adapters (`measured` in the manifest, written by scripts/ship_bundle.py from
the results files). `tmd ask` uses it for four-option questions unless told otherwise; `tmd demo`
shows it beside the zero-shot model."""

from __future__ import annotations

from pathlib import Path

SHIPPED_NAME = "openbook-135m"
SHIPPED_OPTIONS = 4  # OpenBookQA-style: four options


def shipped_bundle() -> Path | None:
    """The shipped bundle's folder, or None when this install has none (a wheel without models/)."""
    folder = Path(__file__).resolve().parents[2] / "models" / SHIPPED_NAME
    return folder if (folder / "manifest.json").is_file() else None


def suits(options: dict) -> bool:
    return len(options) == SHIPPED_OPTIONS


def measured_lines(bundle) -> list[str]:
    """One line per measured system: accuracy, CI, n, and what produced it."""
    info = bundle.manifest if hasattr(bundle, "manifest") else {}
    lines = []
    for key, m in (info.get("measured") or {}).items():
        dataset, split, system = key.split("/")
        lines.append(f"{system.upper()} on {dataset} {split}: {m['accuracy']:.1f}% "
                     f"(95% CI {m['ci95'][0]:.1f}-{m['ci95'][1]:.1f}, n={m['n']}), {m['measured_on']}")
    return lines
