# Two commands a new user needs: `make train` and `make test`. Both create .venv on first use.
# `make train` installs torch and ppokit's core (train, eval, checkpoints); `make test` adds the
# `dev` extra (every optional feature, pytest, ruff, the studio and its browser tests' chromium); `make install EXTRAS=onnx,video` installs the
# extras named (pyproject.toml lists them; README.md has the table).
PYTHON ?= python3
VENV ?= .venv
# torch is pinned so a CPU-only machine takes the local CPU wheel instead of GBs of CUDA packages.
# Another build, e.g. (after `make clean`; torch is installed once per venv):
#   CPU wheel from PyTorch's index:  make train TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
#   CUDA 12.8:                       make train TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# (pick the index that matches your CUDA driver on https://pytorch.org/get-started/locally/).
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?=
PRESET ?= pendulum
ARGS ?=
PYTEST_ARGS ?=
# test-isa: the learning tests under another CPU's vector instructions (avx2, default, avx512, or
# `other`: one below this machine's own); benchmarks/learning_isa.py lists what each profile sets.
ISA ?= other

BIN := $(VENV)/bin
comma := ,
TORCH_STAMP := $(VENV)/.torch
# One stamp per set of extras: .installed-core (no extras), .installed-dev, .installed-onnx-video...
stamp = $(VENV)/.installed-$(or $(subst $(comma),-,$(strip $(1))),core)

# Headless rendering (`ppokit eval --record` on MuJoCo tasks, no display, no GPU): Mesa's EGL with
# the llvmpipe software rasterizer. Installed with apt-get when missing and we are root on a
# Debian-like system; otherwise a note says what to install (everything else still works).
MESA_PKGS ?= libegl1 libegl-mesa0 libgl1-mesa-dri
# The studio's browser tests (extras `studio`, `dev`): Debian's chromium, which Playwright drives
# (no browser download); without it those tests are skipped, saying why.
BROWSER_PKGS ?= chromium
# The PostgreSQL server the `tune` tests start (initdb/pg_ctl in a temporary folder) to serve a
# study to several workers, as several machines would share one: installed the same way with the
# extras that test `ppokit tune` (tune, dev, all). `ppokit tune` itself needs no server.
PG_PKGS ?= postgresql

.PHONY: install system-deps system-deps-browser system-deps-pg train test test-isa lint bench clean

install: $(call stamp,$(EXTRAS))

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

system-deps-browser:
	@if command -v chromium >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the studio's browser tests: $(BROWSER_PKGS)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(BROWSER_PKGS) >/dev/null; \
	else \
		echo "note: chromium not found; install $(BROWSER_PKGS) (Debian) for the studio's browser tests"; \
	fi

system-deps-pg:
	@if [ -n "$$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing PostgreSQL for the ppokit tune tests: $(PG_PKGS)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(PG_PKGS) >/dev/null; \
	else \
		echo "note: PostgreSQL not found; install $(PG_PKGS) (Debian) for the multi-machine ppokit tune test"; \
	fi

$(TORCH_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	touch $@

# `-e .` for the core, `-e ".[a,b]"` for .installed-a-b; Mesa's EGL with the extras that record
# videos, chromium with those that test the studio, PostgreSQL with those that test ppokit tune.
$(VENV)/.installed-%: pyproject.toml $(TORCH_STAMP)
	@$(if $(filter video dev all,$(subst -, ,$*)),$(MAKE) --no-print-directory system-deps,:)
	@$(if $(filter studio dev all,$(subst -, ,$*)),$(MAKE) --no-print-directory system-deps-browser,:)
	@$(if $(filter tune dev all,$(subst -, ,$*)),$(MAKE) --no-print-directory system-deps-pg,:)
	$(BIN)/python -m pip install --quiet -e $(if $(filter core,$*),.,".[$(subst -,$(comma),$*)]")
	touch $@

train: $(call stamp,)
	$(BIN)/ppokit train --preset $(PRESET) $(ARGS)

test: $(call stamp,dev)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

test-isa: $(call stamp,dev)
	$(BIN)/python benchmarks/learning_isa.py --exec $(ISA) -- \
		$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m learning $(PYTEST_ARGS)

lint: $(call stamp,dev)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(call stamp,bench)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
