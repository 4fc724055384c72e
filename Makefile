# Two entry points for a fresh machine: `make reproduce` (the embedded study) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
# dvc runs each stage's `repro ...` command through the shell: the venv's bin must come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup reproduce test lock clean

setup: $(STAMP)

# The stamp makes a second `make setup` a no-op until the lock file or pyproject.toml changes.
# The lock file is a complete `pip freeze`, so pip need not resolve (--no-deps) and `pip check` proves it is
# complete; --no-compile leaves bytecode to first import, which halves the install time.
PIP := $(BIN)/python -m pip --disable-pip-version-check
$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-deps --no-compile -r requirements/lock.txt
	$(PIP) install --quiet --no-deps --no-compile -e .
	$(PIP) check
	@touch $@

reproduce: setup
	$(BIN)/dvc repro
	$(BIN)/repro verify

test: setup
	$(BIN)/pytest

# Regenerate the lock file from the current venv (after changing a dependency on purpose).
lock: setup
	$(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^pip==' > requirements/lock.txt.new
	{ head -n 2 requirements/lock.txt; cat requirements/lock.txt.new; } > requirements/lock.txt.tmp
	mv requirements/lock.txt.tmp requirements/lock.txt; rm -f requirements/lock.txt.new

clean:
	rm -rf $(VENV)
