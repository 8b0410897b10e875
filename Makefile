# The two quick-start commands: `make demo` (the whole main job on the sample) and `make test`.
# Both create the virtual environment first when it is missing or out of date.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/incident-risk demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/pytest

# The edit loop: no integration (real servers, load, fuzz, faults) and no slow tests. CI runs `make test`.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not integration and not slow" -x -q

clean:
	rm -rf $(VENV) .incident-risk .pytest_cache .mypy_cache .ruff_cache
