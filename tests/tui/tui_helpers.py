"""Helpers for the app tests: small settings so real-model runs stay quick."""

from __future__ import annotations

import os
import time

from tmd_local.runner import GenerationSettings


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
