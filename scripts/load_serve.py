"""`tmd serve` under load, on the embedded model (or a server already running, --url).

    .venv/bin/python scripts/load_serve.py [--clients 64] [--seconds 180] [--budget 700MB]
    .venv/bin/python scripts/load_serve.py --bench [--requests 8]     # make bench

Load: `--clients` concurrent clients for `--seconds`, mixing valid questions (drd, 8 tokens),
malformed bodies, bodies over the size limit and clients that dribble their headers. Every valid
request must get its answer or a 429 with Retry-After, every malformed one 422, every oversized one
413, every slow one 408 or a closed connection near the request timeout; the server's resident
memory, sampled every 0.2 s, must stay under --budget; the server must still answer /health at the
end. Exits 1 on any violation.

Bench: valid questions only, from 1, 4 and 16 clients in turn (each sending its next question when
its last is answered): answered requests/s and p50/p95 latency as a client sees it, queueing included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tmd_local.core.memory import parse_size  # noqa: E402
from tmd_local.serve.load import Target, run_bench, run_load  # noqa: E402
from tmd_local.serve.process import ServerProcess  # noqa: E402

REQUEST_TIMEOUT = 5  # the server's --request-timeout here: slow clients are dropped within a run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", action="store_true", help="requests/s and latency for 1, 4 and 16 clients")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--requests", type=int, default=8, help="--bench: questions per client")
    ap.add_argument("--budget", default="700MB", help="the server's --max-memory, and the RSS it must stay under")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--url", default=None, help="a running server instead of starting one (no RSS figure)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.url:
        return report(args, args.url, None)
    server_args = ["--threads", str(args.threads), "--max-memory", args.budget, "--log-level", "warning",
                   "--request-timeout", str(REQUEST_TIMEOUT), "--queue-size", "16"]
    env = {"OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="tmd-load-") as tmp:
        with ServerProcess(server_args, log=Path(tmp) / "server.log", env=env) as server:
            code = report(args, server.url, server)
            if "Traceback" in server.log_text():
                print("the server logged a traceback:\n" + server.log_text()[-3000:])
                code = 1
    return code


def report(args, url: str, server: ServerProcess | None) -> int:
    target = Target(url, request_timeout=REQUEST_TIMEOUT)
    load = os.getloadavg()[0]
    if args.bench:
        rows = [run_bench(target, clients=c, requests_per_client=args.requests) for c in (1, 4, 16)]
        print(f"tmd serve on the embedded model, drd, 8 tokens a question (load average {load:.1f}):")
        print(f"{'clients':>8} {'requests':>9} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'429':>5}")
        for r in rows:
            print(f"{r['clients']:>8} {r['answered']:>9} {r['requests_per_second']:>7} {r['p50_s']:>7} "
                  f"{r['p95_s']:>7} {r['refused_429']:>5}")
        figures = {"bench": rows, "load_average": load}
        failed = any(r["violations"] for r in rows)
    else:
        result = run_load(target, clients=args.clients, seconds=args.seconds,
                          pid=server.proc.pid if server else None)
        figures = {**result.summary(), "clients": args.clients, "budget_mb": round(parse_size(args.budget) / 2**20, 1),
                   "load_average": load}
        alive = health(url)
        figures["healthy_after"] = alive
        print(json.dumps(figures, indent=1))
        for outcome in result.violations[:10]:
            print(f"violation: {outcome.kind} -> {outcome.status}: {outcome.problem}")
        over = server is not None and result.peak_rss_mb > figures["budget_mb"]
        if over:
            print(f"violation: peak RSS {result.peak_rss_mb:.0f} MB over the budget {figures['budget_mb']} MB")
        failed = bool(result.violations) or over or not alive
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 1 if failed else 0


def health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as reply:
            return reply.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
