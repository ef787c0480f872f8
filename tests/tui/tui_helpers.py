"""Helpers for the app tests: small settings so real-model runs stay quick."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tmd_local.runtime.generation import GenerationSettings


def quick_settings(tokens: int = 16, reasoner: int = 24) -> GenerationSettings:
    cores = os.cpu_count() or 1
    settings = GenerationSettings(n_ctx=1024, n_threads=1 if os.getloadavg()[0] >= cores else cores)
    settings.max_tokens = {"analyzer": 24, "informant": 12, "reasoner": reasoner, "drd": tokens}
    return settings


async def wait_for(pilot, predicate, timeout: float = 300.0) -> None:
    """Let the app run until predicate() holds (a worker finished, a panel filled...)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the app"
        await pilot.pause(0.1)


async def export_trace(pilot, app, path: Path) -> dict:
    """Save the shown trace through the export screen (ctrl+s) and read the file back."""
    from textual.widgets import Input

    from tmd_local.tui.screens import ExportScreen

    await pilot.press("ctrl+s")
    assert isinstance(app.screen, ExportScreen)
    app.screen.query_one(Input).value = str(path)
    await pilot.press("enter")
    await pilot.pause()
    return json.loads(path.read_text())
