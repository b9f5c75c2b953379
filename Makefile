# Tollgate: `make run` sets everything up and runs the portal; `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run setup serve test lint messages compilemessages clean system-packages

# Debian packages: WeasyPrint's libraries with HarfBuzz subsetting (fast font embedding in
# PDFs), and the fonts of the PDFs: Liberation Sans (English) and Noto Sans CJK (Japanese).
SYSTEM_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-liberation2 \
	fonts-noto-cjk

## One command: install, migrate, seed demo data, then web server + Celery worker + beat.
run: setup serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

compilemessages: $(VENV)/.installed
	$(BIN)/pybabel compile --statistics -d locale -D django

## Install the missing Debian packages (as root, or through sudo); elsewhere say which.
system-packages:
	@missing=""; for pkg in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "Install these (or your system's equivalents) for PDFs:$$missing"; exit 0; fi; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	echo "Installing$$missing"; \
	$$sudo apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null

setup: system-packages $(VENV)/.installed compilemessages
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py build_pdf_fonts --optional
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py setup_staff_groups
	$(BIN)/python manage.py setup_periodic_tasks
	$(BIN)/python manage.py seed_demo

## Web server, worker and beat in one terminal; Ctrl-C stops all three.
serve:
	@echo "Portal:      http://127.0.0.1:$(PORT)/portal/"
	@echo "Back-office: http://127.0.0.1:$(PORT)/admin/"
	@echo "API docs:    http://127.0.0.1:$(PORT)/api/v1/docs"
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start --port $(PORT)

## The whole test suite (SQLite by default; DATABASE_URL=postgres://... for PostgreSQL).
test: system-packages $(VENV)/.installed compilemessages
	$(BIN)/python manage.py build_pdf_fonts --optional
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

## Ledger throughput on PostgreSQL (bench/README.md): DATABASE_URL=postgres://... make bench BENCH_ARGS=--quick
.PHONY: bench
bench: $(VENV)/.installed
	$(BIN)/python bench/ledger_post.py $(BENCH_ARGS)

## Re-extract the translatable strings into locale/*/LC_MESSAGES/django.po.
messages: $(VENV)/.installed
	$(BIN)/python manage.py makemessages --locale ja --ignore "$(VENV)/*" --ignore "var/*"

clean:
	rm -rf var
