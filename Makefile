# ORBIT — every target bootstraps what it needs, idempotently, on Debian 12 or 13.
#   make demo   the main job on embedded defaults (a local two-host lab)
#   make test   lint, type check and every test (needs root: the lab uses namespaces)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GUEST := guest/build/orbit-guest.elf

.PHONY: all bootstrap debian venv guest demo test lint typecheck pytest pytest-stack lab-down \
	clean lock

all: bootstrap

bootstrap: debian venv guest

debian:
	@scripts/bootstrap-debian.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock | debian
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

guest: | debian
	@$(MAKE) -s -C guest

demo: bootstrap
	$(BIN)/orbit lab demo

test: bootstrap lint typecheck pytest pytest-stack

lint:
	$(BIN)/ruff check orbit tests benchmarks
	$(BIN)/ruff format --check orbit tests benchmarks

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest $(PYTEST_ARGS)

# The fault tests whose outcome depends on the stack (marker stack: recovery after a link
# cut, daemon restarts) again on Debian 13's QEMU 10 / libvirt 11, unpacked beside Debian 12's
# (scripts/lab-stack.sh): on Debian 13 the system's stack is that one, run by pytest.
STACK_DIR := /var/cache/orbit-stacks/debian13
STACK_TESTS := tests/migration/test_faults_lab.py -m stack

pytest-stack: bootstrap
	@if [ "$$(cut -d. -f1 /etc/debian_version)" = 12 ]; then \
	  scripts/lab-stack.sh $(STACK_DIR) && \
	  ORBIT_LAB_STACK=$(STACK_DIR)/root $(BIN)/pytest $(STACK_TESTS); \
	else \
	  echo "pytest-stack: the system's QEMU/libvirt are Debian 13's, tested by pytest"; \
	fi

lab-down: venv
	$(BIN)/orbit lab down

clean:
	$(MAKE) -C guest clean
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

lock: venv
	(echo "# Locked dependencies (pip freeze of a working venv); regenerate with 'make lock'."; \
	 $(BIN)/pip freeze --exclude-editable) > requirements.lock
