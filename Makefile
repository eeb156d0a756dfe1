# Two commands a new user needs: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# torch is pinned so a CPU-only machine takes the local CPU wheel instead of GBs of CUDA packages.
# Override for a GPU machine, e.g. `make train TORCH_SPEC="torch==2.13.0 --index-url ..."`.
TORCH_SPEC ?= torch==2.13.0
PRESET ?= pendulum
ARGS ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Headless rendering (`ppokit eval --record` on MuJoCo tasks, no display, no GPU): Mesa's EGL with
# the llvmpipe software rasterizer. Installed with apt-get when missing and we are root on a
# Debian-like system; otherwise a note says what to install (everything else still works).
MESA_PKGS ?= libegl1 libegl-mesa0 libgl1-mesa-dri

.PHONY: install system-deps train test lint bench clean

install: $(STAMP)

system-deps:
	@if [ -n "$$(ls /usr/lib/*/libEGL_mesa.so.0 /usr/lib/libEGL_mesa.so.0 2>/dev/null)" ] \
		&& [ -n "$$(ls /usr/lib/*/dri/swrast_dri.so /usr/lib/dri/swrast_dri.so 2>/dev/null)" ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Mesa EGL for headless rendering: $(MESA_PKGS)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(MESA_PKGS) >/dev/null; \
	else \
		echo "note: Mesa EGL not found; install $(MESA_PKGS) (Debian) for headless video recording"; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/ppokit train --preset $(PRESET) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
