# The two commands of the quick start:
#   make serve   set up, fetch MovieLens-100K, train + export the default model if no bundle exists, and serve it
#   make test    set up, lint (ruff check, ruff format --check), run the whole test suite, then its torch-free part
#                with torch hidden (what CI runs)
#   make test-quick  the suite without the `slow` tests (no training, no server processes): the edit-test loop
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
BUNDLE ?= bundles/default
RUN    ?= runs/default
HOST   ?= 127.0.0.1
PORT   ?= 8000
# The default model: DeepFM with self-wise APG layers, trained with feature dropout so that requests which leave
# optional features out still get calibrated scores (docs/TRAINING.md, "The default model"). Measured with 2 torch threads on 2 cores:
# 35 s quiet, 685 s with the other core busy (intra-op threads wait on each other when one is descheduled). One
# thread cannot fall into that; `make serve TRAIN_THREADS=2` to use both cores of an idle machine.
TRAIN_THREADS ?= 1
TRAIN_ARGS ?= --model deepfm --apg self --rank 16 --missing-rate 0.1 --threads $(TRAIN_THREADS)

.PHONY: serve test test-quick setup setup-dev bundle lint
serve: setup $(BUNDLE)/bundle.json
	$(BIN)/apg serve --bundle $(BUNDLE) --host $(HOST) --port $(PORT)

# The second run hides torch (tests/without_torch shadows it): the suite must collect, and its torch-free part pass,
# where only the serving half is installed.
test: setup-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	bash scripts/install_debian.sh prometheus prometheus promtool
	bash scripts/install_debian.sh redis-server redis-server
	PY=$(BIN)/python bash scripts/install_triton.sh
	$(BIN)/python -m pytest -q --durations=15
	PYTHONPATH=tests/without_torch $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

test-quick: setup-dev
	$(BIN)/python -m pytest -q -m "not slow"

bundle: $(BUNDLE)/bundle.json

$(BUNDLE)/bundle.json: | setup
	@echo "== no $(BUNDLE) yet: fetching MovieLens-100K, training and exporting the default model (about 40 s)"
	$(BIN)/apg data
	$(BIN)/apg train $(TRAIN_ARGS) --out $(RUN)
	$(BIN)/apg export $(RUN) --out $(BUNDLE)

$(BIN)/python:
	@echo "== creating $(VENV) (a virtual environment for everything this project installs)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch is pinned to 2.13.0 (the CPU build on the machines' disk); serving alone needs only '.[serve]'.
$(VENV)/.setup: pyproject.toml | $(BIN)/python
	@echo "== installing the serving, training and load-test packages (torch CPU, onnxruntime, FastAPI, ...: about a minute, ~1.5 GB)"
	$(BIN)/python -m pip install -q -e '.[serve,train,loadtest]'
	touch $@

$(VENV)/.setup-dev: pyproject.toml $(VENV)/.setup
	@echo "== installing the test tools (pytest, ruff, tritonclient, schemathesis, locust, ...)"
	$(BIN)/python -m pip install -q -e '.[serve,train,loadtest,dev]'
	touch $@

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev

lint: setup-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
