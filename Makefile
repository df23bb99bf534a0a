# recofast: the two commands of the README are `make up` and `make test` (and `make eval`).
# Each sets everything up first (a virtualenv in .venv with the package built in release
# mode and its dev extras), so they work on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data/online_retail/interactions.csv.gz
ITEMS  ?= ../shared/data/online_retail/items.csv
K      ?= 20
MODELS ?= recofast,itemknn,recentpop,pop,river,als-daily,ease,sknn
OUT    ?= runs

.PHONY: setup system-packages up eval eval-tuned eval-context test test-rust test-python bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Builds the Rust extension (release) and installs recofast with its dev extras, and the
# Debian packages tests and benchmarks use (a headless Chromium for the browser tests, wrk
# for the HTTP benchmarks, Prometheus for the deploy/ test) where apt-get can install them (as root); otherwise those tests
# skip and say why.
setup: $(BIN)/python system-packages
	$(BIN)/python -m pip install --quiet -e ./sidecar -e '.[dev]'

DEBS ?= chromium chromium-driver wrk prometheus
system-packages:
	@missing=""; for p in $(DEBS); do { command -v $$p || dpkg -s $$p; } >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null) \
	      || echo "could not install$$missing; the tests that need them skip"; \
	  else echo "not installed:$$missing (not root, or no apt-get); the tests that need them skip"; fi; \
	fi

# The main job: the whole stack (embedded NATS, engine, sidecar on :8080) fed generated
# shop traffic; Ctrl-C stops it. PORT=... and RATE=... change the defaults.
PORT   ?= 8080
RATE   ?= 200
up: setup
	$(BIN)/recofast up --demo --port $(PORT) --rate $(RATE) --data-dir $(OUT)/stack

# Prequential evaluation of the bundled shop log against the baselines.
eval: setup
	mkdir -p $(OUT)
	$(BIN)/recofast eval --events $(DATA) --items $(ITEMS) --k $(K) --model $(MODELS) --json $(OUT)/eval.json

# Every tunable model tuned on the first 30% of the shop log (recofast tune), then all scored,
# warm from that prefix, on the other 70%; the chosen options go to runs/tuned.toml.
TUNED_MODELS ?= recofast,itemknn,ease,sknn,recentpop,pop
BUDGET ?= 8
eval-tuned: setup
	mkdir -p $(OUT)
	$(BIN)/recofast eval --events $(DATA) --items $(ITEMS) --k $(K) --model $(TUNED_MODELS) --tuned --budget $(BUDGET) --json $(OUT)/eval-tuned.json --save-options $(OUT)/tuned.toml

# Context and cold start: a simulated shop with context effects (with context vs the same
# model without, in one run; new items explored), then the shop log with its country.
SIM    ?= $(OUT)/sim
eval-context: setup
	mkdir -p $(SIM)
	$(BIN)/recofast simulate --users 2000 --items 1000 --events 100000 --seed 1 --out $(SIM)/events.jsonl --catalog $(SIM)/catalog.jsonl
	$(BIN)/recofast eval --events $(SIM)/events.jsonl --items $(SIM)/catalog.jsonl --k $(K) --context all --explore 1 --model recofast,recofast-noctx,itemknn,pop --json $(OUT)/eval-sim-context.json
	$(BIN)/recofast eval --events $(DATA) --items $(ITEMS) --k $(K) --context country --model recofast,recofast-noctx,pop --json $(OUT)/eval-retail-context.json

# Every test: Rust unit tests, then pytest (unit, integration, doctests).
test: setup test-rust test-python

test-rust:
	cargo test --locked -p recofast-core

test-python:
	$(BIN)/python -m pytest

# Benchmarks (pytest-benchmark, peers side by side) and their report; disabled in `make test`.
# BENCH=--full for every size (about an hour); BENCH_OUT=... for the folder.
BENCH     ?= --quick
BENCH_OUT ?= $(OUT)/bench
# The shop log is $(DATA) when it is there, else found beside the checkout (bench/conftest.py).
bench: setup
	RECOFAST_SHOP_LOG="$$( [ -f "$(DATA)" ] && realpath "$(DATA)" )" $(BIN)/recofast bench $(BENCH) --out $(BENCH_OUT)

clean:
	rm -rf $(VENV) target
