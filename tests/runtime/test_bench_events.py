"""`make bench` (scripts/bench/generation.py) watches the pipeline through its events: the calls it
replays on raw llama.cpp are exactly the prompts the runner sent (checked here on the fake module),
and it needs nothing from tests/ (no sys.path entry, no patched LoadedModule)."""

import importlib.util
import sys
from pathlib import Path

from tmd_local.runtime.fake import FakeLoader
from tmd_local.runtime.generation import GenerationSettings
from tmd_local.runtime.pipeline import run
from tmd_local.core.records import Question
from tmd_local.runtime.runner import LoadedModule

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "generation.py"


def load_bench(monkeypatch):
    before_path, before_generate = list(sys.path), LoadedModule.generate
    spec = importlib.util.spec_from_file_location("bench_generation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_generation", module)  # its dataclasses look themselves up there
    monkeypatch.delitem(sys.modules, "common", raising=False)  # the script imports scripts/bench/common.py so
    spec.loader.exec_module(module)
    sys.modules.pop("common")  # ... and no later import of a "common" gets it
    added = [p for p in sys.path if p not in before_path]
    sys.path[:] = before_path
    assert not any("tests" in Path(p).parts for p in added), added
    assert LoadedModule.generate is before_generate
    return module


def test_the_bench_records_each_call_as_the_runner_sent_it(monkeypatch):
    bench = load_bench(monkeypatch)
    loader = FakeLoader(["1. Hot?\n2. Dry?", "Yes.", "Very dry indeed, always", "Final Answer: B"])
    settings = GenerationSettings(n_threads=1)
    settings.max_tokens["informant"] = 3
    recorder = bench._CallRecorder()
    question = Question("q", "Could a penguin survive a day in the Sahara?", {"A": "yes", "B": "no"})
    run("tmd", [question], loader.module_set(), settings, recorder, pool=loader.pool(settings))
    assert [c.stage for c in recorder.calls] == ["analyzer", "informant", "informant", "reasoner"]
    assert [c.tokens for c in recorder.calls] == [p.prompt_ids for p in loader.prompts]
    assert [c.max_tokens for c in recorder.calls] == [p.max_tokens for p in loader.prompts] == [128, 3, 3, 320]
    assert recorder.calls[2].text == "Very dry indeed," and recorder.calls[2].finish_reason == "length"
    assert [c.completion_tokens for c in recorder.calls] == [4, 1, 3, 3]
