# Set-up and entry points. `make test` and `make leaderboard` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
# A bare `torch` requirement pulls a multi-GB CUDA build; pin a CPU-friendly release first.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# The main job's preset and output folder (CI runs `make leaderboard PRESET=smoke`).
PRESET ?= quick
OUT ?= runs/leaderboard

.PHONY: setup test leaderboard lint clean

$(BIN)/maw-gym: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/maw-gym

test: setup
	$(BIN)/python -m pytest -q

leaderboard: setup
	$(BIN)/maw-gym leaderboard --dataset nave-kjv --preset $(PRESET) --out $(OUT)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
