# Two entry points (see README): `make demo` and `make test`. Both install into ./.venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all

.PHONY: install demo test test-slurm test-all clean-results bench lint

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet "pip>=23"
	# constraints keep torch CPU-only and resolve the packaging/nilearn clash (see README "Install notes")
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all,test,lint]"
	# hd-bet drags in a torchvision that fails to import next to torch 2.13; nothing here needs it.
	-$(BIN)/pip uninstall --yes --quiet torchvision
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	SLURM_CONF=$${SLURM_CONF:-/nonexistent} $(BIN)/snakemake --cores $(CORES)

test: $(STAMP)
	SLURM_CONF=$${SLURM_CONF:-/nonexistent} $(BIN)/python -m pytest $(PYTEST_ARGS)

# A real single-node Slurm on localhost (root + apt; installs slurm-wlm/munge if missing), then
# `snakemake --profile slurm` on a tiny cohort through it; skips loudly where apt is unavailable.
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -m slurm -v $(PYTEST_ARGS)

# Every script in benchmarks/ (benchmarks/_common.py runs them), each table with the machine and the
# git commit in results/benchmarks/<name>.txt. Quick sizes by default (4-6 minutes on 2 cores);
# `make bench BENCH_ARGS=` for the full sizes (about 35 minutes, estimated). A benchmark whose
# prerequisites are missing (selection.py: a demo run) is reported as skipped with the command to run.
BENCH_ARGS ?= --quick

bench: $(STAMP)
	$(BIN)/python benchmarks/_common.py $(BENCH_ARGS)

# Style and structure: ruff, the import contracts in pyproject.toml (layers, torch-free base, no
# cycles) and Snakemake's own linter over the workflow.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	SLURM_CONF=/nonexistent $(BIN)/snakemake --lint --cores 1

test-all: $(STAMP)
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

clean-results:
	rm -rf results .snakemake
