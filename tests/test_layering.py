"""The import graph points down (docs/ARCHITECTURE.md), read from the source with ast.

    app layer   tmd_local.cli (the `tmd` command group), tmd_local.__main__, tmd_local.tui, tmd_local.serve
    stages      teacher/, trainer/, exporter/
    library     the rest of tmd_local (tmd_local.core.paths at the very bottom)

Every import counts, at module level or inside a function: a late import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("teacher", "trainer", "exporter")
COMMAND_GROUP = "tmd_local.cli"
APP_LAYER = (COMMAND_GROUP, "tmd_local.__main__", "tmd_local.tui", "tmd_local.serve")
OUR_PACKAGES = ("tmd_local", *STAGES)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Dotted names a file imports; `from a import b` counts as a and a.b (b may be a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in OUR_PACKAGES}


GRAPH = {module_name(p): ours(imported_names(p))
         for package in OUR_PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def modules_of(*prefixes) -> list[str]:
    return [m for m in GRAPH if within(m, prefixes)]


def violations(importers, forbidden) -> list[str]:
    return sorted(f"{m} imports {t}" for m in importers for t in GRAPH[m] if within(t, forbidden))


LIBRARY = [m for m in modules_of("tmd_local") if not within(m, APP_LAYER)]
LAYERS = ("tmd_local.core", "tmd_local.runtime", "tmd_local.evaluation", "tmd_local.terminal")  # bottom first


def test_the_reader_sees_real_imports():
    # If parsing silently found nothing, every rule below would pass: check edges known to exist.
    assert {"teacher.cli", "trainer.cli", "exporter.cli"} <= GRAPH[COMMAND_GROUP]
    assert "tmd_local.core.hf_base" in GRAPH["trainer.data"] and "tmd_local.core.hf_base" in GRAPH["exporter.export"]
    assert "tmd_local.core.paths" in GRAPH["tmd_local.core.hf_base"]  # a relative import, resolved
    assert len(LIBRARY) > 20


def test_the_library_imports_no_stage_and_no_app_layer():
    assert violations(LIBRARY, STAGES + APP_LAYER) == []


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_the_library(stage):
    others = tuple(s for s in STAGES if s != stage)
    assert violations(modules_of(stage), others + APP_LAYER) == []


def test_only_the_command_group_imports_the_stages():
    importers = {m for m in GRAPH if not within(m, STAGES) and any(within(t, STAGES) for t in GRAPH[m])}
    assert importers == {COMMAND_GROUP}


def test_only_main_imports_the_command_group():
    assert {m for m in GRAPH if COMMAND_GROUP in GRAPH[m]} == {"tmd_local.__main__"}


def test_the_app_and_the_server_do_not_import_each_other():
    assert violations(modules_of("tmd_local.tui"), ["tmd_local.serve"]) == []
    assert violations(modules_of("tmd_local.serve"), ["tmd_local.tui"]) == []


def test_paths_is_the_bottom_of_the_graph():
    imports = imported_names(ROOT / "tmd_local" / "core" / "paths.py")
    assert {n.split(".")[0] for n in imports} <= set(sys.stdlib_module_names) | {"__future__"}


def test_the_command_group_imports_no_heavy_library():
    """`tmd --help` and `tmd ask` import every stage's command module: none may load these."""
    heavy = ["torch", "transformers", "peft", "llama_cpp", "textual", "openai", "uvicorn", "fastapi",
             "matplotlib", "datasets"]
    code = (f"import sys; from tmd_local.cli import cli; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_every_library_module_sits_in_a_layer():
    assert [m for m in LIBRARY if m != "tmd_local" and not within(m, LAYERS)] == []


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer):
    above = LAYERS[LAYERS.index(layer) + 1:]
    assert violations(modules_of(layer), above + STAGES + APP_LAYER) == []



def test_no_import_circle():
    """Among our own modules, following imports never leads back to where it started."""
    modules = set(GRAPH)
    edges = {m: {t for t in GRAPH[m] if t in modules and t != m} for m in modules}
    done, on_path, circles = set(), [], []

    def visit(m):
        if m in on_path:
            circles.append(on_path[on_path.index(m):] + [m])
            return
        if m in done:
            return
        on_path.append(m)
        for t in sorted(edges[m]):
            visit(t)
        on_path.pop()
        done.add(m)

    for m in sorted(modules):
        visit(m)
    assert circles == []
