# Two entry points (see README): `make run` and `make test`.
# Both create the project-local virtual environment .venv when it is missing
# and reinstall only when requirements.txt or pyproject.toml changed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-all lint install chromium clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) chromium

# The browser tests drive Debian's chromium (Playwright cannot download its own here):
# installed when missing and running as root; otherwise those tests skip with the reason.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
		echo "warning: could not install chromium; the browser tests will skip"; \
	fi

run: $(STAMP)
	$(BIN)/streamlit run app.py

# `make test` is what CI runs: lint, format check, type check (mypy), then the tests on two
# pytest-xdist workers (a test module stays on one worker: its servers and clusters start once).
test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not extended"

# everything, the extended tests too (more Ray runs, a second cold numba compile): ~25 min
test-all: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
