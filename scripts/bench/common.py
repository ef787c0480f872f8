"""Shared by the scripts in scripts/bench/: the command line every runtime benchmark takes, the
generation settings built from it, measurements in a fresh subprocess of the calling script,
gold-teacher training data, and the figures' frame (load average, summary table, --json).

Not run itself. The scripts are run as files (`python scripts/bench/<name>.py`, as scripts/gpu/'s
are) and import it as `common` from their own folder; importing it puts the repo root on sys.path,
so tmd_local, trainer and exporter come from this checkout without an installed tmd."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = "smollm2-135m-instruct"

sys.path.insert(0, str(ROOT))  # first, so this checkout wins over an installed tmd


# --- command line -----------------------------------------------------------------------------

def new_parser(doc: str, generation: bool = True) -> argparse.ArgumentParser:
    """--threads and --json for every script; the llama.cpp generation settings where it generates.
    A subprocess of the script is called with --child (hidden)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="llama.cpp and torch threads (default: all cores)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    if generation:
        gen = parser.add_argument_group("generation settings")
        gen.add_argument("--n-ctx", type=int, default=2048)
        gen.add_argument("--analyzer-tokens", type=int, default=128)
        gen.add_argument("--informant-tokens", type=int, default=128)
        gen.add_argument("--reasoner-tokens", type=int, default=320)
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    args.threads = args.threads or None  # a child is given 0 for "the default"
    return args


def settings_from(args):
    """GenerationSettings from the command line (imported here: training_precision.py needs none)."""
    from tmd_local.runtime.generation import GenerationSettings

    settings = GenerationSettings(n_ctx=args.n_ctx)
    if args.threads:
        settings.n_threads = args.threads
    settings.max_tokens = {"analyzer": args.analyzer_tokens, "informant": args.informant_tokens,
                           "reasoner": args.reasoner_tokens, "drd": args.reasoner_tokens}
    return settings


# --- subprocesses: a measurement whose peak RSS is its own -------------------------------------

def child_command(script: str, args, *extra: str, threads: int | None = None) -> list[str]:
    """The calling script again with --child, the same threads and generation settings, and `extra`."""
    cmd = [sys.executable, str(Path(script).resolve()), "--child", "--threads", str(threads or args.threads or 0)]
    if hasattr(args, "n_ctx"):
        cmd += ["--n-ctx", str(args.n_ctx), "--analyzer-tokens", str(args.analyzer_tokens),
                "--informant-tokens", str(args.informant_tokens), "--reasoner-tokens", str(args.reasoner_tokens)]
    return cmd + list(extra)


def run_child(label: str, cmd: list[str]) -> dict:
    done = subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True)
    return child_figures(label, done.returncode, done.stdout, done.stderr)


def child_figures(label: str, returncode: int, stdout: str, stderr: str) -> dict:
    """A child's figures: the last line of its stdout, as JSON (see print_child)."""
    if returncode != 0:  # the child's own error, not just "exit status 1"
        sys.exit(f"bench {label} failed:\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def print_child(figures: dict) -> None:
    print(json.dumps(figures))


def run_quiet(cmd: list[str]) -> None:
    """A preparation step: its output only matters when it fails, and then all of it does."""
    done = subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[1:4])} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")


def gold_teacher_data(tmp: Path, questions: int) -> Path:
    """Training data for StrategyQA train questions from the gold teacher: instant and offline, so a
    fresh checkout gets the same data as this machine."""
    teacher = tmp / "teacher"
    run_quiet([sys.executable, "-m", "tmd_local", "teach", "--dataset", "strategyqa", "--split", "train",
               "--limit", str(questions), "--teacher", "gold", "--out", str(teacher)])
    return teacher


# --- figures ----------------------------------------------------------------------------------

def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def start_figures(args) -> dict:
    """The machine (and the generation settings) the figures were measured with."""
    if not hasattr(args, "n_ctx"):
        return {"machine": {"cpus": os.cpu_count(), "threads": args.threads or os.cpu_count(),
                            "loadavg_start": loadavg()}}
    settings = settings_from(args)
    return {"machine": {"cpus": os.cpu_count(), "threads": settings.n_threads, "loadavg_start": loadavg()},
            "settings": {"n_ctx": settings.n_ctx, "max_tokens": settings.max_tokens}}


def finish(figures: dict, args, rows: list[tuple[str, ...]]) -> None:
    """Load average at the end, the summary table, and --json. On shared cores wall times say as
    much about the neighbours as about tmd, so the load average goes with the figures."""
    machine = figures["machine"]
    machine["loadavg_end"] = loadavg()
    print_summary(rows)
    kind = "llama.cpp" if "settings" in figures else "torch"
    print(f"\nload average: start {machine['loadavg_start']}, end {machine['loadavg_end']} "
          f"on {os.cpu_count()} CPUs, {machine['threads']} {kind} threads")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures: {args.json}")


def print_summary(rows: list[tuple[str, ...]]) -> None:
    """The measured figures side by side: the TMD way in one column, what it is compared with next."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tmd runtime figures")
    for col in ("#", "figure", "tmd", "compared with", "ratio", "check"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    print()
    Console(width=max(132, shutil.get_terminal_size().columns)).print(table)  # not 80 wide in a log


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}" if b else "-"  # 3 significant digits: a swap/reload ratio is ~1e-5
