# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench reproduce clean

setup: $(STAMP)

# torch is installed first and pinned exactly: this machine serves a CPU build of 2.13.0 from disk,
# and a looser pin would pull a multi-GB CUDA build. llama-cpp-python builds from source once;
# pip caches the wheel, so a new .venv reuses it.
$(STAMP): pyproject.toml teacher/__init__.py trainer/__init__.py exporter/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# llama.cpp's own converters, from the llama-cpp-python sdist of the installed version (cached in .cache/).
	$(BIN)/python -c "from exporter.vendor import ensure_converter; ensure_converter()"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tmd demo

# A test run writes only under a temporary $TMD_HOME (tests/conftest.py): no bytecode or pytest
# cache in the checkout either. TMD_TEST_CACHE_DIR=<folder> keeps the dequantized base and the
# converters between runs.
TEST_RUN := PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -p no:cacheprovider

test: $(STAMP)
	$(TEST_RUN)

test-fast: $(STAMP)
	$(TEST_RUN) -m "not slow"

# Figures, not pass/fail, one script per family in scripts/bench/ (common.py is their shared helper):
# generated tok/s (pipeline vs raw llama.cpp), module residency RSS and switch time, stage-batched vs
# per-question, training tok/s (dynamic padding vs pad-to-512, LM head, 2 one-thread jobs), prefix
# cache on/off, thread settings under load, tok/s per quantization; tmd serve under load; then
# training tok/s, peak RSS and held-out loss per precision and loss path, 1 process vs 2 ranks.
bench: $(STAMP)
	$(BIN)/python scripts/bench/generation.py
	$(BIN)/python scripts/bench/residency.py
	$(BIN)/python scripts/bench/batching.py
	$(BIN)/python scripts/bench/training_speed.py
	$(BIN)/python scripts/bench/prefix_cache.py
	$(BIN)/python scripts/bench/threads.py
	$(BIN)/python scripts/bench/quants.py
	$(BIN)/python scripts/load_serve.py --bench  # tmd serve: requests/s, p50/p95 for 1, 4, 16 clients
	$(BIN)/python scripts/bench/training_precision.py

# The measured figures of README.md and docs/RESULTS.md, regenerated end to end, resuming whatever is already done: OBQA
# (scripts/distill_obqa.sh, the shipped bundle models/openbook-135m and reports/obqa/), then StrategyQA:
# full-scale distillation (100/400/1603 questions, learning curve, error sources, test split; many
# hours on 2 cores), the paper's 3 epochs on all 1603 questions (~12 h more), then the 50-question
# bundle's quantization and Table 3 runs and the other datasets.
reproduce: $(STAMP)
	scripts/distill_obqa.sh  # OBQA: teach, train (skipped where scripts/gpu/unpack.sh put GPU adapters), export, test
	$(BIN)/tmd export --adapters runs/obqa-e3-lr1e-3/adapters --mode adapter --quant q8_0 --no-keep-merged \
		--out runs/obqa-e3-lr1e-3/lora-bundle
	$(BIN)/python scripts/ship_bundle.py runs/obqa-e3-lr1e-3/lora-bundle models/openbook-135m obqa-e3-lr1e-3 \
		results/obqa-finetuned.jsonl results/obqa-finetuned-drd.jsonl
	$(BIN)/tmd report results/obqa-*.jsonl --out reports/obqa/report.md --publish
	# the shipped bundle as users run it (LoRA GGUFs over the embedded Q4_1 base): README's and RESULTS' obqa section
	$(BIN)/tmd eval --dataset obqa --split test --limit 500 --threads 1 --system drd --system tmd \
		--bundle models/openbook-135m --out results/obqa-shipped.jsonl
	$(BIN)/python scripts/ship_bundle.py --remeasure models/openbook-135m results/obqa-shipped.jsonl  # what the demo shows
	$(BIN)/tmd report results/obqa-zero-shot.jsonl results/obqa-shipped.jsonl --out reports/obqa-shipped/report.md \
		--results-doc README.md --results-doc docs/RESULTS.md --section obqa --publish
	scripts/distill_strategyqa.sh
	EPOCHS=3 SIZES=1603 PHASE=train scripts/distill_strategyqa.sh  # train + eval: the rate was chosen at 1 epoch
	EPOCHS=3 SIZES=1603 PHASE=eval scripts/distill_strategyqa.sh
	scripts/reproduce_strategyqa.sh

clean:
	rm -rf $(VENV) .pytest_cache
