# recofast: the two commands of the README are `make eval` and `make test`.
# Each sets everything up first (a virtualenv in .venv with the package built in release
# mode and its dev extras), so they work on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data/online_retail/interactions.csv.gz
ITEMS  ?= ../shared/data/online_retail/items.csv
K      ?= 20
MODELS ?= recofast,itemknn,recentpop,pop,river,als-daily
OUT    ?= runs

.PHONY: setup eval test test-rust test-python bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Builds the Rust extension (release) and installs recofast with its dev extras.
setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ./sidecar -e '.[dev]'

# The main job: prequential evaluation of the bundled shop log against the baselines.
eval: setup
	mkdir -p $(OUT)
	$(BIN)/recofast eval --events $(DATA) --items $(ITEMS) --k $(K) --model $(MODELS) --json $(OUT)/eval.json

# Every test: Rust unit tests, then pytest (unit, integration, doctests).
test: setup test-rust test-python

test-rust:
	cargo test --locked -p recofast-core

test-python:
	$(BIN)/python -m pytest

# Benchmarks (pytest-benchmark, peers side by side); disabled in `make test`.
bench: setup
	$(BIN)/python -m pytest bench --benchmark-enable --benchmark-only --benchmark-group-by=group -p no:randomly

clean:
	rm -rf $(VENV) target
