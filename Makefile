# usfmae: `make demo` (set-up + the whole pipeline on sample data), `make test` (the test suite),
# `make docker-test` (both Docker images built with podman here and run offline: docker/README.md).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast docker-test setup tesseract bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

tesseract:
	@if ! command -v tesseract >/dev/null 2>&1; then \
	  echo "tesseract not found: installing tesseract-ocr with apt-get"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null) || \
	    { echo "error: apt-get could not install tesseract-ocr; install it by hand (Debian/Ubuntu: apt-get install tesseract-ocr, macOS: brew install tesseract)"; exit 1; }; \
	  else \
	    echo "error: tesseract is missing and cannot be installed here (need root and apt-get)."; \
	    echo "       Install it by hand: apt-get install tesseract-ocr (Debian/Ubuntu) or brew install tesseract (macOS)"; exit 1; \
	  fi; \
	fi

setup: $(STAMP) tesseract

demo: setup
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python launch/demo.py --out demo_out

test: setup
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q

test-fast: setup
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q -m "not slow"

docker-test:
	bash docker/test_images.sh

clean:
	rm -rf demo_out runs .pytest_cache
