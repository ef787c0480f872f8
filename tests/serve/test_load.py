"""Issue #27: the load test at small scale. A real `tmd serve` on the embedded model and 12
concurrent clients for a few seconds, mixing valid questions, malformed bodies, oversized bodies and
clients that dribble their headers (tmd_local/serve/load.py; scripts/load_serve.py runs 64 clients
for minutes). Every request gets what its kind should, memory stays under the budget, and the
server is still healthy afterwards."""

from __future__ import annotations

import os

import pytest

from tmd_local.serve.load import KINDS, Target, run_load
from tmd_local.serve.process import ServerProcess

BUDGET_MB = 700e6 / 2**20


@pytest.mark.slow
def test_twelve_mixed_clients_are_each_answered_as_promised(embedded_model, tmp_path):
    args = ["--threads", "1", "--queue-size", "4", "--max-memory", "700MB", "--request-timeout", "2",
            "--max-body-size", "256KiB", "--log-level", "warning"]
    env = {"PYTHONPATH": os.getcwd(), "OMP_WAIT_POLICY": "PASSIVE"}
    with ServerProcess(args, log=tmp_path / "server.log", env=env) as server:
        target = Target(server.url, max_tokens=4, body_limit=256 * 1024, request_timeout=2)
        report = run_load(target, clients=12, seconds=8, pid=server.proc.pid)
        after = server.get("/health")
        log = server.log_text()
    summary = report.summary()
    print("\nsmall load test:", summary)
    assert not report.violations, [(o.kind, o.status, o.problem) for o in report.violations[:5]]
    assert all(report.count(kind) for kind in KINDS), summary["by_kind"]  # every kind was tried
    assert report.count("valid", 200) >= 1 and report.count("valid", 429) >= 1  # queue of 4, 12 clients
    assert 0 < report.peak_rss_mb < BUDGET_MB
    assert after["status"] == "ok" and "Traceback" not in log
