VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test bench

$(INSTALLED): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(INSTALLED)
	PATH="$(CURDIR)/$(BIN):$$PATH" ./boot.sh

test: $(INSTALLED)
	$(BIN)/python -m pytest

bench: $(INSTALLED)
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(BIN)/python bench/bench.py
