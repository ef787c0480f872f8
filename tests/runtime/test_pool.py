"""Residency on the real embedded model: one module at a time, keep-loaded, budgets, integrity
checks, LoRA adapter swaps and cancellation (llama.cpp, no mocks)."""

import dataclasses

import pytest

from runtime_helpers import small_settings
from tmd_local.core.errors import TmdError
from tmd_local.runtime.generation import Cancelled, ModuleRef
from tmd_local.core.memory import MemoryBudget, estimate_footprint, rss_mb
from tmd_local.runtime.pool import ModulePool
from tmd_local.core.registry import ModelRef
from tmd_local.runtime.runner import LoadedModule

pytestmark = pytest.mark.slow
HELLO = [{"role": "user", "content": "Name one colour."}]


def test_token_counts_match_llama_cpp_when_cut_at_max_tokens(embedded_model):
    from llama_cpp import Llama

    settings = small_settings()
    with ModulePool(settings).use("reasoner", embedded_model) as (module, _):
        ours = module.generate([{"role": "user", "content": "Tell a long story about fog."}], max_tokens=5)
        prompt = module.tokenize(module.render([{"role": "user", "content": "Tell a long story about fog."}]))
    assert ours.finish_reason == "length" and ours.completion_tokens == 5
    raw = Llama(model_path=str(embedded_model.path), n_ctx=settings.n_ctx, n_threads=settings.n_threads, verbose=False)
    usage = raw.create_completion(prompt, max_tokens=5, temperature=0.0)["usage"]
    assert usage["completion_tokens"] == ours.completion_tokens and usage["prompt_tokens"] == ours.prompt_tokens


def test_one_module_at_a_time_and_memory_comes_back(embedded_model):
    pool = ModulePool(small_settings())
    for stage in ("analyzer", "reasoner"):
        with pool.use(stage, embedded_model) as (module, residency):
            module.generate(HELLO, max_tokens=4)
            assert pool.resident == [embedded_model.name]
        assert pool.resident == []
        assert residency.how == "load" and residency.load_seconds > 0
        # the weights (94 MiB) and KV cache went away; what stays is llama.cpp's one-time setup
        assert residency.peak_rss_mb - residency.rss_after_close_mb > 80
        assert residency.rss_after_close_mb - residency.rss_before_mb < 40
    assert [r.how for r in pool.history] == ["load", "load"]


def test_keep_loaded_loads_a_shared_file_once(embedded_model):
    with ModulePool(small_settings(), keep_loaded=True) as pool:
        for stage in ("analyzer", "informant", "reasoner"):
            with pool.use(stage, embedded_model):
                pass
        assert [r.how for r in pool.history] == ["load", "reuse", "reuse"]
        assert pool.history[1].load_seconds == 0 and pool.resident == [embedded_model.name]
    assert pool.resident == [] and pool.history[0].rss_after_close_mb > 0


def test_keep_loaded_evicts_least_recently_used_to_stay_in_budget(gguf_copies):
    first, second = (ModelRef(p, p.stem) for p in gguf_copies)
    settings = small_settings()
    with ModulePool(settings, keep_loaded=True) as unlimited:
        for ref in (first, second):
            with unlimited.use("analyzer", ref):
                pass
        assert unlimited.resident == ["first", "second"]
    one_module = estimate_footprint(first.path, settings.n_ctx, settings.n_batch).total_bytes
    budget = MemoryBudget(int(rss_mb() * 2**20 + one_module * 1.3), "one module")
    with ModulePool(settings, keep_loaded=True, budget=budget) as pool:
        for ref in (first, second):
            with pool.use("analyzer", ref):
                pass
        assert pool.resident == ["second"]  # first was closed to make room
        assert pool.history[0].rss_after_close_mb > 0


def test_budget_refuses_before_loading(embedded_model):
    pool = ModulePool(small_settings(), budget=MemoryBudget.parse("100MB"))
    with pytest.raises(TmdError) as e:
        with pool.use("analyzer", embedded_model):
            pass
    assert str(e.value).startswith("--max-memory 100MB: loading analyzer (SmolLM2-135M-Instruct.Q4_1.gguf) "
                                   "needs about")
    assert pool.history == [] and pool.resident == []


def test_estimate_covers_what_loading_really_costs(embedded_model):
    settings = small_settings()
    with ModulePool(settings).use("reasoner", embedded_model) as (module, residency):
        module.generate([{"role": "user", "content": "Describe fog. " * 150}], max_tokens=4)
    measured = residency.peak_rss_mb - residency.rss_before_mb
    assert residency.estimated_mb >= 0.9 * measured, (residency.estimated_mb, measured)
    assert residency.estimated_mb <= 1.6 * measured, (residency.estimated_mb, measured)


def test_files_are_checked_against_the_manifest(embedded_model):
    good = ModuleRef(embedded_model.path, "m", size=embedded_model.path.stat().st_size,
                     sha256_expected=embedded_model.sha256(), source="manifest.json: modules.analyzer")
    pool = ModulePool(small_settings())
    with pytest.raises(TmdError, match=r"sha256 mismatch: .*the manifest says 000000000000"):
        with pool.use("analyzer", dataclasses.replace(good, sha256_expected="0" * 64)):
            pass
    with pytest.raises(TmdError, match=r"truncated: \d+ bytes, the manifest says \d+ \(manifest.json"):
        with pool.use("analyzer", dataclasses.replace(good, size=good.size + 1)):
            pass
    assert pool.history == []
    with pool.use("analyzer", good):
        pass


def test_adapter_swap_matches_a_fresh_load(embedded_model, loras):
    settings = small_settings()
    module = LoadedModule(embedded_model, settings)
    try:
        base = module.generate(HELLO, 12).text
        module.set_adapter(loras["zero"])
        assert module.generate(HELLO, 12).text == base  # B = 0: the adapter changes nothing
        module.set_adapter(loras["a"])
        with_a = module.generate(HELLO, 12).text
        module.set_adapter(None)
        assert module.generate(HELLO, 12).text == base  # cleared: the bare base again
        module.set_adapter(loras["a"])
        assert module.generate(HELLO, 12).text == with_a
    finally:
        module.close()
    fresh = LoadedModule(ModuleRef(embedded_model.path, "a", adapter=loras["a"]), settings)
    try:
        assert fresh.generate(HELLO, 12).text == with_a
    finally:
        fresh.close()


def test_pool_swaps_adapters_on_a_resident_base(embedded_model, loras):
    refs = [ModuleRef(embedded_model.path, role, adapter=loras[name])
            for role, name in (("analyzer", "a"), ("informant", "b"), ("reasoner", "a"))]
    with ModulePool(small_settings(), keep_loaded=True) as pool:
        for ref in refs:
            with pool.use(ref.name, ref) as (module, _):
                assert module.adapter == ref.adapter
    load, *swaps = pool.history
    assert [r.how for r in pool.history] == ["load", "swap", "swap"]
    assert all(r.load_seconds < load.load_seconds for r in swaps)


def test_broken_adapters_are_refused_with_a_message(tmp_path, embedded_model):
    import gguf
    import numpy as np

    f64 = tmp_path / "f64.lora.gguf"
    writer = gguf.GGUFWriter(str(f64), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((8, 576)))  # float64: would crash llama.cpp
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((576, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    pool = ModulePool(small_settings())
    with pytest.raises(TmdError, match="is f64, which llama.cpp cannot compute with"):
        with pool.use("analyzer", ModuleRef(embedded_model.path, "x", adapter=f64)):
            pass
    with pytest.raises(TmdError, match="not a LoRA adapter GGUF"):
        with pool.use("analyzer", ModuleRef(embedded_model.path, "x", adapter=embedded_model.path)):
            pass
    assert pool.resident == []


def test_cancel_stops_between_tokens_and_closes_the_module(embedded_model):
    pool = ModulePool(small_settings())
    pieces = []
    with pytest.raises(Cancelled):
        with pool.use("reasoner", embedded_model) as (module, _):
            module.generate([{"role": "user", "content": "Count from one to fifty."}], 64,
                            on_text=pieces.append, should_stop=lambda: len(pieces) >= 3)
    assert len(pieces) == 3 and pool.resident == []
