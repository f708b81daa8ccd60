# Set-up and everyday commands. `make test` and `make demo` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU torch is pinned where no NVIDIA GPU is present (the unpinned requirement pulls a CUDA build).
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_PIN := $(if $(HAS_GPU),torch,torch==2.13.0)
NATIVE_SOURCES := $(wildcard csrc/*.cpp csrc/*.h) CMakeLists.txt pyproject.toml

.PHONY: install test demo cpu-paper dev bench lint clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Editable install: Python files are used from the tree; the stamp reinstalls when C++ changes.
$(VENV)/.installed: $(PY) $(NATIVE_SOURCES)
	$(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" ninja "cmake>=3.18"
	$(PIP) install --quiet --no-build-isolation -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

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

lint:
	$(PY) -m ruff check python kernels tests bench && $(PY) -m ruff format --check python kernels tests bench

clean:
	rm -rf build $(VENV) python/densescale/_C*.so
