# dlstation: `make bench` benchmarks this machine, `make test` proves the code, `make lint` checks it,
# `make check` is lint plus the fast tests (the edit-test loop).
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
# there is one (as in CI), else Keras downloads them.
DLSTATION_DATA_DIR ?= $(abspath $(wildcard ../shared/datasets))
export DLSTATION_DATA_DIR
REPORT_DIR ?= reports/$(shell date -u +%Y%m%dT%H%M%SZ)
BENCH_ARGS ?=

.PHONY: venv setup bench test test-prereqs check lint docs mutate clean clean-results

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

# Markers whose tests need something slow or outside the repository; `make check` leaves them out.
FAST_TESTS := not slow and not realdata and not chromium and not motoserver and not sshd and not index and not provision

# The whole suite. Real provisioning of this machine is opt-in: DLSTATION_TEST_PROVISION=1.
test: $(STAMP) test-prereqs
	$(BIN)/pytest -q

# Chromium and its fonts, openssh-server (apt-get, as root); without them their tests skip.
test-prereqs:
	.ci/test-prereqs

check: lint $(STAMP)
	$(BIN)/pytest -q -n auto -m "$(FAST_TESTS)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/ansible-playbook --syntax-check setup.yml bench.yml
	$(BIN)/ansible-lint --nocolor

# Mutation testing of the trust code (tests/mutation/targets.toml): every branch deleted or
# negated in turn must fail a test; writes tests/mutation/last-run.md. Minutes, so not in CI.
mutate: $(STAMP)
	$(BIN)/python -m tests.mutation.run

# What can be rebuilt; measured results and reports stay (`make clean-results` removes those).
clean:
	rm -rf $(VENV) .make .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +

clean-results:
	rm -rf results reports

# Record every transcript in the guides again, in place (`make docs DOCS=cloud-walkthrough`
# for one; `python -m tests.docs --list` names them). dlcloud runs against moto's server on
# 127.0.0.1, dlbench for real; the test suite compares them with what varies masked.
docs: $(STAMP)
	$(BIN)/python -m tests.docs $(DOCS)
