# One command to run, one to test; both set up .venv first when needed.
# `make run` installs the server only; `make test` adds the test extra.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8888
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q --disable-pip-version-check
RUN_STAMP := $(VENV)/.stamp-server
TEST_STAMP := $(VENV)/.stamp-test

.PHONY: install run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# A .venv made before the distribution was renamed holds it as "uploader": drop that.
$(RUN_STAMP): pyproject.toml setup.py | $(BIN)/python
	-$(BIN)/pip uninstall -q -y uploader >/dev/null 2>&1
	$(PIP) -e '.[server]'
	touch $@

$(TEST_STAMP): pyproject.toml setup.py | $(BIN)/python
	-$(BIN)/pip uninstall -q -y uploader >/dev/null 2>&1
	$(PIP) -e '.[test]'
	touch $@ $(RUN_STAMP)

install: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/uploader serve --port $(PORT)

test: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(TEST_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info build dist
