# Two commands for a fresh machine: `make demo` and `make test`. Each sets everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.effnet-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: demo test setup data postgres lint bench clean

demo: setup data
	$(VENV)/bin/effnet demo

# --dist loadfile: a file's tests run on one worker, so a module-scoped fixture (a quick experiment) is set up once;
# files in collection order, where tests/conftest.py puts the slowest first.
test: setup data postgres
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch/torchvision are pinned and served from this machine's disk; install them first so nothing else pulls a
# different build, then the project with every extra and the test dependencies.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[all,test]'
	touch $(STAMP)

# Real data: Fashion-MNIST from Debian's package (the training, search and demo use it).
data: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(SUDO) apt-get install -y -q dataset-fashion-mnist || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist)

# PostgreSQL's server, for the test of a search shared through a database (the test starts its own cluster).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || $(SUDO) apt-get install -y -q postgresql || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
