# Two commands for a fresh machine (see README):
#   make run    install everything and start the web app on http://127.0.0.1:8000
#   make test   install everything (Chromium too, for the browser test) and run the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint install install-dev browser bench clean

$(VENV)/.installed: requirements.txt requirements-serve.txt requirements-selfie.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) tools/install_torch.py
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt requirements-batch.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Debian's Chromium for the Playwright tests (never `playwright install`: it downloads a browser) and
# Debian's redis-server for the shared rate-limit test; the tests start and stop their own instances.
browser:
	@missing=""; [ -x /usr/bin/chromium ] || missing="$$missing chromium"; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: missing$$missing; run 'sudo apt-get install -y$$missing' or the tests that need them are skipped"; fi; \
	fi

# Fetch the weights (selfie from PyPI's mediapipe wheel, Mask R-CNN from download.pytorch.org).
# Without the Mask R-CNN weights (offline, say) the app itself starts with the selfie engine and
# says so, exactly as `flask run`, the Procfile and the CLI do. HOST=0.0.0.0 serves other machines.
run: install
	@$(PY) -m app download-weights --model selfie >/dev/null || true
	@if [ "$${BGREMOVAL_MODEL:-maskrcnn}" = maskrcnn ] && [ -z "$$BGREMOVAL_WEIGHTS" ]; then \
	  $(PY) -m app download-weights --model maskrcnn || echo "(the app will start with the selfie engine if its weights are there)"; \
	fi
	@echo "Serving on http://$(HOST):$(PORT)$(if $(filter 127.0.0.1 localhost,$(HOST)), (this machine only: make run HOST=0.0.0.0 serves other machines),)"
	@HOST=$(HOST) PORT=$(PORT) $(VENV)/bin/gunicorn -c gunicorn.conf.py asgi:app

test: install-dev browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: install-dev
	$(VENV)/bin/ruff check .

bench: install-dev
	$(PY) bench/speed.py

clean:
	rm -rf $(VENV) .pytest_cache
