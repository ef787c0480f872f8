"""The app in a real terminal: tmux runs `tmd app`, send-keys types a question, capture-pane reads
the screen back until the answer is highlighted; then ctrl+q must quit cleanly (exit status 0)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None,
                                 reason="tmux is not installed (apt-get install -y tmux); "
                                        "the real-terminal test drives the app through it")]


class Tmux:
    def __init__(self, name: str):
        self.socket = name  # a private server: never touches the user's tmux sessions

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True)
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "app")

    def keys(self, *keys: str, literal: bool = False) -> None:
        # Textual reads keys as they arrive; typed too fast, a Tab can be taken as part of the text
        self("send-keys", "-t", "app", *(["-l"] if literal else []), *keys)
        time.sleep(0.4)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            assert time.monotonic() < deadline, f"{text!r} never appeared; the screen was:\n{screen}"
            time.sleep(0.5)


def test_app_in_a_real_terminal(tmp_path):
    threads = 1 if os.getloadavg()[0] >= (os.cpu_count() or 1) else (os.cpu_count() or 1)
    app = (f"{sys.executable} -m tmd_local app --system drd --max-tokens 16 --n-ctx 1024 "
           f"--threads {threads}")
    tmux = Tmux(f"tmd-test-{os.getpid()}")
    try:
        tmux("new-session", "-d", "-s", "app", "-x", "160", "-y", "48", "-c", str(tmp_path),
             f"TERM=xterm-256color {app}; echo EXIT=$?; sleep 60")
        tmux.wait_for("Bundle or model", timeout=60)
        tmux.keys("Could a penguin survive a summer day in the Sahara?", literal=True)
        tmux.keys("Tab")
        tmux.keys("A. yes", literal=True)
        tmux.keys("Enter")
        tmux.keys("B. no", literal=True)
        tmux.keys("C-r")
        screen = tmux.wait_for("done · A:", timeout=300)
        assert "Final answer" in screen and "B. no" in screen
        assert "▶" in screen or "no answer could be parsed" in screen
        assert "Traceback" not in screen
        tmux.keys("C-q")
        assert "EXIT=0" in tmux.wait_for("EXIT=", timeout=30)
    finally:
        tmux("kill-server")
