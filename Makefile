# Set-up and entry points. `make demo` and `make test` work on a fresh machine with Python >= 3.10.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# The CPU build of torch is installed first, so the project's torch range is already met and pip
# does not pull a multi-GB CUDA build; on a GPU machine, install your CUDA torch first instead.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint format bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# the top-hat's numba kernel into its on-disk cache, so no job compiles it (tophat.warm_kernel_cache)
	$(BIN)/python -c "from wmhflow.preprocess.tophat import warm_kernel_cache; warm_kernel_cache()"
	touch $@

install: $(BIN)/.installed

demo: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores all
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --report results/report.html

test: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

# ruff (pyflakes, pycodestyle, import order, bugbear; the formatter in check mode), snakefmt on the
# rules, and Snakemake's own linter. Format in place with `make format`.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile workflow/rules

bench: install
	for b in benchmarks/bench_*.py; do PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python $$b || exit 1; done

clean:
	rm -rf results .snakemake
