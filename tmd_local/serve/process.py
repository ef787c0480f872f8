"""`tmd serve` in a child process, for tests and benchmarks: start it on a free port, wait until it
answers /health, read its peak memory, stop it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..core.errors import TmdError

_URL = re.compile(r"on (http://\S+?) \(OpenAI")


class ServerProcess:
    """`with ServerProcess(["--model", ...], log=path) as server: server.url ...`"""

    def __init__(self, args: list[str], *, log: Path, env: dict | None = None, api_key: str | None = None,
                 startup_seconds: float = 120):
        self.args = ["--port", "0", *args]
        self.api_key = api_key
        self.log = Path(log)
        self.env = {**os.environ, **(env or {})}
        self.startup_seconds = startup_seconds
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> "ServerProcess":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tmd_local", "serve", *self.args],
                                         stdout=out, stderr=subprocess.STDOUT, env=self.env)
        try:
            self.url = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + self.startup_seconds
        url = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TmdError(f"tmd serve exited with status {self.proc.returncode}: {self.log_text()[-2000:]}")
            if not url:
                match = _URL.search(self.log_text())
                url = match.group(1) if match else ""
            if url:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=2) as response:
                        if response.status == 200:
                            return url
                except OSError:
                    pass
            time.sleep(0.2)
        raise TmdError(f"tmd serve did not come up in {self.startup_seconds:.0f} s: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def peak_rss_mb(self) -> float:
        """The child's peak resident memory over its whole life (VmHWM can be reset by the pool,
        so the server's own /metrics figure, which tracks the maximum, is read too)."""
        figures = [_status_mb(self.proc.pid, "VmHWM")]
        try:
            figures.append(self.get("/metrics")["peak_rss_mb"])
        except (OSError, KeyError, ValueError):
            pass
        return max(f for f in figures if f is not None)

    def get(self, path: str) -> dict:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: the worker closes the pool
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _status_mb(pid: int, field: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
