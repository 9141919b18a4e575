# mriad — the two set-up commands are `make demo` and `make test`; both install on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= 2

.PHONY: install demo test test-slow bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The HTML viewer's script (NiiVue, BSD-2-Clause), inlined into pages so they work offline; optional.
	command -v npm >/dev/null && npm install -s --prefix $(VENV)/niivue --no-save --no-audit --no-fund --ignore-scripts @niivue/niivue@0.69.0 || echo "npm missing or failed: HTML pages get no NiiVue viewer"
	touch $(STAMP)

demo: install
	$(BIN)/python -m mriad.demo

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	bash bench/run_all.sh

lint: install
	$(BIN)/ruff check mriad tests bench examples
	$(BIN)/ruff format --check mriad tests bench examples
	$(BIN)/mypy mriad

clean:
	rm -rf $(VENV) .pytest_cache
