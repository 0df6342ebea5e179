# dlstation: `make bench` benchmarks this machine, `make test` proves the code, `make lint` checks it.
# Every target is idempotent: the venv is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A GPU machine gets TensorFlow with its CUDA wheels; others the CPU build.
TF_EXTRA ?= $(if $(shell command -v nvidia-smi 2>/dev/null),tensorflow-cuda,tensorflow-cpu)
EXTRAS ?= $(TF_EXTRA),jax,dev
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# Keras's data files: $DLSTATION_DATA_DIR, else a shared/datasets folder beside the clone if
# there is one (as on our build machines), else Keras downloads them.
DLSTATION_DATA_DIR ?= $(abspath $(wildcard ../shared/datasets))
export DLSTATION_DATA_DIR
REPORT_DIR ?= reports/$(shell date -u +%Y%m%dT%H%M%SZ)
BENCH_ARGS ?=

.PHONY: venv setup bench test lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

# Provision this machine with setup.yml (sudo password asked when not root), then report the
# verification run it fetched.
setup: $(STAMP)
	$(BIN)/ansible-playbook setup.yml $(if $(filter 0,$(shell id -u)),,--ask-become-pass) $(SETUP_ARGS)
	$(BIN)/dlbench report results/verify --out results/verify/report --title "dlstation setup: verification run"

bench: $(STAMP)
	$(BIN)/dlbench run --out $(REPORT_DIR) $(BENCH_ARGS)
	$(BIN)/dlbench report $(REPORT_DIR) --out $(REPORT_DIR) --title "dlbench on $$(hostname)"

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/ansible-playbook --syntax-check setup.yml bench.yml
	$(BIN)/ansible-lint --nocolor

clean:
	rm -rf $(VENV) reports results .make .mypy_cache .ruff_cache .pytest_cache
