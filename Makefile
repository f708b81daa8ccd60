# Set-up and everyday commands. `make test` and `make demo` work on a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU torch is pinned where no NVIDIA GPU is present (the unpinned requirement pulls a CUDA build).
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_PIN := $(if $(HAS_GPU),torch,torch==2.13.0)
NATIVE_SOURCES := $(wildcard csrc/*.cpp csrc/*.h) CMakeLists.txt pyproject.toml
# One tested set of versions for every package the install pulls in (pip constraints: a package
# listed here installs at exactly this version). pyproject.toml keeps the ranges users get.
LOCK := constraints.txt
LATEST ?= .venv-latest

.PHONY: install test test-latest lock demo cpu-paper dev bench wheelhouse gpu-suite-dry lint clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip -c $(LOCK)

# Editable install from the lock: Python files are used from the tree; the stamp reinstalls when
# C++ or the lock changes.
$(VENV)/.installed: $(PY) $(NATIVE_SOURCES) $(LOCK)
	$(PIP) install --quiet "$(TORCH_PIN)" -c $(LOCK)
	$(PIP) install --quiet scikit-build-core pybind11 ninja cmake -c $(LOCK)
	$(PIP) install --quiet --no-build-isolation -e ".[test]" -c $(LOCK)
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# Drift check: the newest releases that pyproject.toml's ranges allow, in their own venv, through
# the same suite; then what differs from the lock (what the next `make lock` must handle).
test-latest:
	rm -rf $(LATEST) && python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet "$(TORCH_PIN)"
	$(LATEST)/bin/python -m pip install --quiet scikit-build-core pybind11 ninja cmake
	$(LATEST)/bin/python -m pip install --quiet --no-build-isolation -e ".[test]"
	$(LATEST)/bin/python -m pip freeze --all --exclude-editable | grep -v '^densescale' | sort > $(LATEST)/freeze.txt
	@echo "packages whose newest release differs from $(LOCK) (< lock, > newest):"
	@diff <(grep -v '^#' $(LOCK) | sed 's/+cpu//' | sort) <(sed 's/+cpu//' $(LATEST)/freeze.txt) || true
	$(LATEST)/bin/python -m pytest -q tests

# Refresh the lock from the newest releases, after `make test-latest` passed (see README).
lock:
	test -f $(LATEST)/freeze.txt || { echo "run make test-latest first"; exit 1; }
	{ echo "# densescale install lock (pip constraints), refreshed by make lock on $$(date -u +%F)"; \
	  echo "# from a passing make test-latest on $$($(LATEST)/bin/python -V), $$(uname -m)"; \
	  sed 's/+cpu//' $(LATEST)/freeze.txt; } > $(LOCK)

demo: $(VENV)/.installed
	$(VENV)/bin/densescale study --preset demo

# The longer study (about an hour on 2 cores): model-size, data-size and joint laws on a full grid.
cpu-paper: $(VENV)/.installed
	$(VENV)/bin/densescale study --preset cpu-paper

# Builds densescale._C next to the Python sources and links kernels/ in, for PYTHONPATH=python.
dev:
	ln -sfn ../../kernels python/densescale/kernels
	cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DDENSESCALE_INPLACE=ON \
	  -DPython_EXECUTABLE=$$(command -v python3) \
	  -Dpybind11_DIR=$$(python3 -m pybind11 --cmakedir)
	cmake --build build/dev

bench: $(VENV)/.installed
	$(PY) bench/bench_loss.py
	$(PY) bench/bench_search.py

# Wheels for the GPU machine (no network there), carried as .wheelhouse/; never committed.
wheelhouse:
	bash bench/make_wheelhouse.sh

# Every step of bench/gpu_suite.sh at tiny sizes on the CPU (no install/build into the dev venv).
gpu-suite-dry: $(VENV)/.installed
	PY=$(PY) bash bench/gpu_suite.sh --dry-run --no-install

lint:
	$(PY) -m ruff check python kernels tests bench && $(PY) -m ruff format --check python kernels tests bench

clean:
	rm -rf build $(VENV) $(LATEST) python/densescale/_C*.so
