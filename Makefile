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
	command -v wrk >/dev/null && [ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx libnginx-mod-http-lua)
	$(BIN)/python -m bench.bench
