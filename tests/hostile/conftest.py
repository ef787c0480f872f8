"""Hostile input (issue #11): generated bad inputs against every command and file reader.

Each test asserts one of two outcomes: a one-line `Error: ...` with exit status 1 (or click's usage
error, status 2), or correct handling. Never a traceback, a hang or a silently wrong number.
Example counts stay small so the whole folder runs in well under a minute on two cores."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("hostile", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("hostile")
