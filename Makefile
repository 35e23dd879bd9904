# Two entry points: `make demo` (the main job, end to end) and `make test`.
# Both build their own virtual environment in .venv from nothing but a Python >= 3.10.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: a CPU build; an unpinned range would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wsc demo --out out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/kernel_table.py
	$(BIN)/python benchmarks/placement_bench.py
	$(BIN)/python benchmarks/models.py
	$(BIN)/python benchmarks/numerics.py
	$(BIN)/python benchmarks/requests.py

clean:
	rm -rf $(VENV) out .pytest_cache
