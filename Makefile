VENV := .venv
BIN := $(VENV)/bin
# What each target needs installed: serving needs requirements.txt only, the tests and the
# benchmark the tools of requirements-dev.txt too.
SERVING := $(VENV)/.serving
TESTING := $(VENV)/.testing

.PHONY: run test bench

$(SERVING): requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(TESTING): $(SERVING) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(SERVING)
	PATH="$(CURDIR)/$(BIN):$$PATH" ./boot.sh

test: $(TESTING)
	$(BIN)/python -m pytest

bench: $(TESTING)
	command -v wrk >/dev/null && [ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx libnginx-mod-http-lua)
	$(BIN)/python -m bench
