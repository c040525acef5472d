# The two commands the README promises, plus the checks they are made of.
# Both are idempotent and work from a clean clone on Debian 12 (root for the apt step).

VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint typecheck pytest demo clean image

# Image to build: qemu-amd64, qemu-arm64 or rpi (docs/OPERATIONS.md).
TARGET ?= qemu-amd64

setup:
	@tools/setup.sh

test: setup
	$(MAKE) --no-print-directory lint typecheck pytest

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:
	$(PY) -m mypy

pytest:
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	@tools/demo.sh

image: setup
	$(PY) image/build.py --target $(TARGET)

clean:
	rm -rf $(VENV) edge-data demo-out .mypy_cache .ruff_cache .pytest_cache
