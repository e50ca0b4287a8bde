# One entry point for a fresh machine: every target installs what it needs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt requirements-torch.txt requirements-torchrec.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements-torch.txt
	# torchrec's declared dependency is the CUDA fbgemm-gpu, which breaks `import torchrec` on CPU.
	$(PIP) --no-deps -r requirements-torchrec.txt
	$(PIP) -r requirements.txt -r requirements-dev.txt -c requirements-torch.txt
	$(PIP) --no-deps -e .
	$(BIN)/python -c "import torch, torchrec, fbgemm_gpu, apache_beam, kfp"
	touch $(STAMP)

demo: install
	$(BIN)/nmtrec run --config configs/demo.yaml --output runs/demo

test: install
	$(BIN)/pytest tests

bench: install
	$(BIN)/nmtrec bench --help

clean:
	rm -rf $(VENV) runs .pytest_cache
