"""Shared fixtures: a temporary tmd home for the whole session, the embedded model and its
dequantized copy, the benchmark data (skipped with a reason when absent), and an isolated working
directory for anything a command writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tmd_local.core import paths
from tmd_local.core.datasets import default_data_dir
from tmd_local.core.errors import TmdError
from tmd_local.core.registry import DEFAULT_MODEL, resolve_model

# A folder the sessions may share for what is slow to rebuild (the dequantized base, llama.cpp's
# converters). Unset: both are built once per session in the temporary home.
TEST_CACHE_ENV = "TMD_TEST_CACHE_DIR"
_HOME = pytest.StashKey[tuple]()
_PUBLISHED = pytest.StashKey[dict]()


def pytest_configure(config):
    """Before collection, point $TMD_HOME (models/, runs/, results/, .cache/, the dequantized base)
    and Hypothesis's storage at a temporary folder, so a test run never writes into the checkout.
    Subprocesses inherit it through the environment; it is removed when the run ends."""
    from hypothesis.configuration import set_hypothesis_home_dir

    sdist = _users_sdist()  # looked up before the environment changes: the user's own cache
    home = Path(tempfile.mkdtemp(prefix="tmd-test-home-"))
    saved = {name: os.environ.get(name) for name in (paths.HOME_ENV, paths.CACHE_ENV)}
    config.stash[_HOME] = (home, saved)
    os.environ[paths.HOME_ENV] = str(home)
    shared_cache = os.environ.get(TEST_CACHE_ENV, "").strip()
    if shared_cache:
        os.environ[paths.CACHE_ENV] = shared_cache
    else:
        os.environ.pop(paths.CACHE_ENV, None)
    if sdist is not None:
        _offer_sdist(sdist)
    set_hypothesis_home_dir(home / ".hypothesis")  # its examples and constants, else ./.hypothesis/
    config.stash[_PUBLISHED] = _published_files()


def _published_files() -> dict[str, tuple[int, int]]:
    """The checkout's published reports (reports/): each file's size and modification time."""
    reports = paths.CODE_ROOT / "reports"
    return {str(p.relative_to(paths.CODE_ROOT)): (s.st_size, s.st_mtime_ns)
            for p in sorted(reports.rglob("*")) if p.is_file() and (s := p.stat())}


def pytest_sessionfinish(session, exitstatus):
    """A test that wrote into the checkout's reports/ (a relative --out resolved against the working
    directory, a report without --out) fails the run, naming what it changed."""
    before = session.config.stash.get(_PUBLISHED, None)
    if before is None:
        return
    after = _published_files()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"the tests changed the checkout's published reports: {', '.join(changed)}"
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config):
    home, saved = config.stash[_HOME]
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def tmd_home(pytestconfig) -> Path:
    """The session's temporary $TMD_HOME."""
    return pytestconfig.stash[_HOME][0]


def _users_sdist() -> Path | None:
    """The llama-cpp-python sdist `make setup` cached for the installed version, if any."""
    from exporter.vendor import installed_version, sdist_filename

    try:
        version = installed_version()
    except TmdError:
        return None
    tarball = paths.cache_dir() / f"llama-cpp-python-{version}" / "sdist" / sdist_filename(version)
    return tarball if tarball.is_file() else None


def _offer_sdist(tarball: Path) -> None:
    """Link the user's sdist into the test cache, where exporter.vendor looks for a downloaded one:
    the converters are extracted from it (read only) instead of fetched from PyPI again."""
    link = paths.cache_dir() / tarball.parent.parent.name / "sdist" / tarball.name
    if link.exists() or link.is_symlink():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tarball)


@pytest.fixture(scope="session")
def embedded_model():
    try:
        return resolve_model(DEFAULT_MODEL)
    except TmdError as e:
        pytest.skip(f"embedded model not installed: {e}")


@pytest.fixture(scope="session")
def hf_base(embedded_model) -> Path:
    """The embedded GGUF dequantized to a Hugging Face folder: built once per session in the
    temporary home (or once ever in $TMD_TEST_CACHE_DIR), where trainer and exporter look for it."""
    from tmd_local.core.hf_base import ensure_hf_base

    return ensure_hf_base(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = default_data_dir()
    if found is None or not (found / "strategyqa").is_dir():
        pytest.skip("benchmark data not found: set TMD_DATA_DIR or place shared/data beside the checkout")
    return found


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in a temp dir, for commands given relative paths (--out r.jsonl, reports/...)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
