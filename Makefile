# One-command set-up: `make demo` (installs, then runs the demo on the bundled real sample)
# and `make test` (installs, then runs the test suite). Both create ./.venv on first use.
VENV    ?= .venv
PY      := $(VENV)/bin/python
# torch is pinned to the CPU wheel: an unpinned torch pulls several GB of CUDA packages.
TORCH   ?= torch==2.13.0
# On 2-core machines numpy/scipy BLAS threads fight torch's threads (5-10x slower epochs).
export OMP_NUM_THREADS      ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS      ?= 1

.PHONY: install demo test docs bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,docs]"
	$(PY) -m pip install -q --no-build-isolation "natten>=0.20"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/ecgnat demo --output_dir ecgnat-demo

test: install
	$(PY) -m pytest -q

# the manual: fails on a broken link, a page outside the nav or an API reference that does not resolve
docs: install
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: install
	$(PY) benchmarks/attention.py
	$(PY) benchmarks/model.py
	$(PY) benchmarks/data.py

clean:
	rm -rf $(VENV) ecgnat-demo .pytest_cache site dist
