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
