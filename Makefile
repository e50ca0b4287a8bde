# One entry point for a fresh machine: every target installs what it needs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: install demo test bench clean lock lock-check readme-figures

install: $(STAMP)

# Installs requirements.lock, every transitive dependency pinned (`make lock` compiles it from the
# top-level pins in requirements*.txt). Plain pip, not uv: torch's CPU build lies on local disk.
$(STAMP): pyproject.toml requirements.lock requirements.txt requirements-dev.txt requirements-torch.txt requirements-torchrec.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements-torch.txt -c requirements.lock
	# the rest exactly as locked, unresolved: torchrec's declared dependency is the CUDA fbgemm-gpu,
	# which breaks `import torchrec` on CPU (the lock has fbgemm-gpu-cpu instead)
	$(PIP) --no-deps -r requirements.lock
	$(PIP) --no-deps -e .
	$(BIN)/python -c "import torch, torchrec, fbgemm_gpu, apache_beam, kfp"
	touch $(STAMP)

demo: install
	$(BIN)/nmtrec run --config configs/demo.yaml --output runs/demo

test: install
	$(BIN)/pytest tests

# Recompile requirements.lock from requirements*.txt (resolves afresh with pip; installs nothing).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(BIN)/python .ci/lock.py compile

# The lock agrees with the top-level pins, and .venv is exactly the lock (run by .ci/run).
lock-check: install
	$(BIN)/python .ci/lock.py check

# Rewrite README.md's demo table from runs/demo/report.json (written by `make demo`).
readme-figures:
	@test -f runs/demo/report.json || { echo "readme-figures: runs/demo/report.json is missing: run 'make demo' first" >&2; exit 1; }
	$(MAKE) install
	$(BIN)/python -m benchmarks.readme_table --report runs/demo/report.json --readme README.md --config configs/demo.yaml \
	  $(if $(wildcard runs/bench-priority/priority.md),--block bench-priority runs/bench-priority/priority.md) \
	  $(if $(wildcard runs/bench-priority-unseen/priority.md),--block bench-priority-unseen runs/bench-priority-unseen/priority.md) \
	  $(if $(wildcard runs/bench-priority-holdout/priority.md),--block bench-priority-holdout runs/bench-priority-holdout/priority.md) \
	  $(if $(wildcard runs/bench-priority-fresh/priority.md),--block bench-priority-fresh runs/bench-priority-fresh/priority.md) \
	  $(if $(wildcard runs/bench-priority-fifth/priority.md),--block bench-priority-fifth runs/bench-priority-fifth/priority.md) \
	  $(if $(wildcard runs/bench-nmt/bench_nmt.md),--block bench-nmt runs/bench-nmt/bench_nmt.md) \
	  $(if $(wildcard runs/bench-scale/scale.md),--block bench-scale runs/bench-scale/scale.md)

bench: install
	$(BIN)/nmtrec bench --help

clean:
	rm -rf $(VENV) runs .pytest_cache
