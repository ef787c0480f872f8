"""A full disk for a real `tmd` process (issue #27): the child runs under RLIMIT_FSIZE (`ulimit -f`)
with SIGXFSZ ignored, so a write that would make any file larger than the limit fails with EFBIG,
as a write to a full disk fails with ENOSPC. No root and no loop device needed. Output goes through
pipes, which the limit does not apply to."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys


def tmd_command(*args) -> list[str]:
    return [sys.executable, "-c", "from tmd_local.cli import main; main()", *map(str, args)]


def run_with_file_limit(cmd: list[str], limit_bytes: int | None, timeout: float = 600) -> subprocess.CompletedProcess:
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(cmd, preexec_fn=limit if limit_bytes is not None else None, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_disk_error(result: subprocess.CompletedProcess) -> str:
    """Exit 1, no traceback, and exactly one `Error:` line, saying the disk is full."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "out of disk space" in errors[0], output[-3000:]
    return errors[0]
