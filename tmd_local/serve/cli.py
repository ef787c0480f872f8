"""The `tmd serve` command."""

from __future__ import annotations

import ipaddress
import os
import socket

import click

from ..core.errors import TmdError
from ..terminal.console import console, one_line_errors
from ..terminal.options import SEED, Real, Size
from ..terminal.runtime_options import (
    build_runtime,
    build_settings,
    context_options,
    model_option,
    runtime_options,
)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --api-key-env.")
@click.option("--port", type=int, default=8000, show_default=True, help="0 picks a free port (printed).")
@click.option("--api-key-env", metavar="VAR", default=None,
              help="Environment variable holding the API key clients send as 'Authorization: Bearer <key>'.")
@click.option("--queue-size", type=click.IntRange(1, 10_000), default=16, show_default=True,
              help="Questions that may wait; more are refused with 429 and Retry-After.")
@click.option("--max-batch", type=click.IntRange(1, 1000), default=16, show_default=True,
              help="Waiting questions run together, each module loaded once for all of them.")
@click.option("--max-body-size", type=Size(), default="4MiB", show_default=True,
              help="Largest request body; a larger one is refused with 413 before it is read.")
@click.option("--request-timeout", type=Real(0, 3600, low_open=True), default=30, show_default=True,
              help="Seconds a client may take to send its request (headers and body); then 408.")
@click.option("--shutdown-grace", type=Real(0, 3600), default=20, show_default=True,
              help="On SIGTERM/SIGINT, seconds the questions under way may take to finish; then 503.")
@model_option
@click.option("--zero-shot", is_flag=True,
              help="Answer every question with the model itself, not the shipped distilled students "
                   "(used for four-option TMD/DRD questions on the default model).")
@context_options
@click.option("--seed", type=SEED, default=0, show_default=True, help="Default seed (requests may set one).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@runtime_options
@one_line_errors
def serve(host, port, api_key_env, queue_size, max_batch, max_body_size, request_timeout, shutdown_grace, model,
          zero_shot, n_ctx, threads, seed, log_level, bundle, quant, max_memory, memory_budget, results_paths, keep_loaded):
    """Answer questions over HTTP: OpenAI-compatible /v1/chat/completions (model tmd, drd or mc),
    /v1/tmd/answer (trace JSON), /v1/models, /health and /metrics."""
    from ..core.memory import parse_size
    from .app import create_app
    from .engine import Engine
    from .server import run_server

    api_key = read_api_key(host, api_key_env)
    settings = build_settings(n_ctx, threads, 0.0, seed)
    modules, pool, source = build_runtime(model, bundle, quant, max_memory, keep_loaded, settings,
                                          systems=("tmd", "drd"), memory_budget=memory_budget,
                                          results_paths=results_paths)
    shipped = shipped_modules(model, bundle, zero_shot, quant)
    sock = bind(host, port)
    engine = Engine(modules, pool, queue_size=queue_size, max_batch=max_batch,
                    shipped=shipped[1] if shipped else None)
    app = create_app(engine, label=modules.label, bundle_name=source.name, api_key=api_key,
                     max_body_bytes=parse_size(max_body_size), shipped_name=shipped[0] if shipped else None)
    url = f"http://{_url_host(host)}:{sock.getsockname()[1]}"
    budget = f", memory budget {max_memory}" if max_memory else ""
    four = (f" (four-option tmd/drd questions: the shipped distilled students, {shipped[1].label}; "
            "--zero-shot to turn off)") if shipped else ""
    console.print(f"tmd serve: {modules.label}{four} on {url} (OpenAI base_url {url}/v1), "
                  f"{'modules kept loaded' if keep_loaded else 'one module resident at a time'}{budget}, "
                  f"queue {queue_size}{', API key required' if api_key else ''}", highlight=False, soft_wrap=True)
    run_server(app, engine, sock, log_level=log_level, request_seconds=request_timeout, grace=shutdown_grace)


def shipped_modules(model, bundle, zero_shot: bool, quant):
    """(name, ModuleSet) of the shipped students that answer four-option questions when the server
    runs the embedded default model (no --bundle, no --zero-shot); None otherwise. --quant applies to
    them as it does in `tmd ask` when they run in one of the forms they ship in, else their default."""
    from ..runtime.shipped import shipped_students
    from ..terminal.console import warn_plain

    students = shipped_students(model, bundle, zero_shot)
    if students is None:
        return None
    for line in students.warnings:
        warn_plain(line)
    try:
        return students.name, students.module_set(quant)
    except TmdError:
        return students.name, students.module_set(None)


def read_api_key(host: str, variable: str | None) -> str | None:
    """The key from the environment; required when the server listens beyond loopback."""
    if variable is None:
        if not is_loopback(host):
            raise TmdError(f"--host {host}: listening beyond loopback needs an API key; set one in an "
                           "environment variable and name it with --api-key-env VAR")
        return None
    key = os.environ.get(variable, "").strip()
    if not key:
        raise TmdError(f"--api-key-env {variable}: that environment variable is not set or is empty")
    return key


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise TmdError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
