# Two entry points for a fresh machine: `make reproduce` (the embedded study) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1

.PHONY: setup reproduce test lock clean

setup: $(STAMP)

# The stamp makes a second `make setup` a no-op until the lock file or pyproject.toml changes.
$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

reproduce: setup
	$(BIN)/dvc repro
	$(BIN)/repro verify

test: setup
	$(BIN)/pytest

# Regenerate the lock file from the current venv (after changing a dependency on purpose).
lock: setup
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^pip==' > requirements/lock.txt.new
	{ head -n 2 requirements/lock.txt; cat requirements/lock.txt.new; } > requirements/lock.txt.tmp
	mv requirements/lock.txt.tmp requirements/lock.txt; rm -f requirements/lock.txt.new

clean:
	rm -rf $(VENV)
