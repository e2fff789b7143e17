# supervisor-lookout: `make demo` and `make test` work on a fresh clone (they build .venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Most tests wait on a real supervisord, not on the CPU (a full run keeps about one core busy):
# eight at a time, an idle worker taking queued tests from a busy one (worksteal), long ones first.
TEST_WORKERS ?= 8

.PHONY: demo test matrix bench lint venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## demo: a real supervisord with a miniature trading stack, the listener and a local alert inbox
demo: $(STAMP)
	$(BIN)/python demo/run.py

## test: lint, then the whole suite against a real supervisord
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

## matrix: every capability under every perturbation (tests/matrix; tens of minutes). `make test`
## runs one perturbation per capability, rotating by the day; LOOKOUT_MATRIX=<perturbation> picks one.
matrix: $(STAMP)
	LOOKOUT_MATRIX=all $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal -m matrix tests/matrix

## bench: throughput, latency and memory against baselines measured in the same run
bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .demo build *.egg-info
