# vae-serving: every command a developer, CI or an operator needs.
# `make serve` and `make test` work on a fresh clone: they create .venv/ and install first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Extras installed into .venv for each use; the stamp files make installs happen once.
RUNTIME_STAMP := $(VENV)/.runtime-installed
FULL_STAMP := $(VENV)/.full-installed

.PHONY: serve test model data sweep gen lint image tools loadtest bench soak latent-report clean help

help:
	@echo "make serve     serve the bundled model (gRPC :50051, metrics :9090)"
	@echo "make test      install everything and run the whole test suite"
	@echo "make gen       regenerate client/src/vae from protos/ after changing the contract"
	@echo "make model     data -> train -> export -> pictures into models/vae-mnist/1"
	@echo "make sweep     the training hyper-parameter sweep"
	@echo "make image     build the container image (podman or docker)"
	@echo "make loadtest  run every ghz scenario (ghz if on PATH, else our generator)"
	@echo "make bench     the benchmark against gRPC's floor and onnxruntime's limit"
	@echo "make soak      a long mixed load, reporting RSS and open files"
	@echo "make latent-report  Score's anomaly AUCs, the morph and variations pictures (docs/)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The server imports the generated contract (package vae) from the client distribution. The
# client comes second, so that replacing an older server, which owned the vae-client command,
# cannot remove the client's.
$(RUNTIME_STAMP): pyproject.toml client/pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet -e "./client[images]"
	@touch $@

$(FULL_STAMP): $(RUNTIME_STAMP)
	$(BIN)/pip install --quiet -e ".[codegen,export,test]"
	@touch $@

# After editing protos/: regenerate the committed code in client/src/vae.
gen: $(FULL_STAMP)
	PYTHON=$(PY) protos/generate.sh

serve: $(RUNTIME_STAMP)
	$(PY) -m service

test: $(FULL_STAMP)
	scripts/install-tools.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

data: $(FULL_STAMP)
	$(PY) -m export.convert_mnist

model: $(FULL_STAMP)
	$(PY) -m export.pipeline

sweep: $(FULL_STAMP)
	$(PY) -m export.sweep

image:
	scripts/build-image.sh

tools:
	scripts/install-tools.sh

loadtest: $(RUNTIME_STAMP)
	$(PY) -m loadtest.scenarios

bench: $(FULL_STAMP)
	$(PY) -m bench
	$(PY) -m bench.workers --client-cpus 1 --out bench/workers.json

soak: $(FULL_STAMP)
	$(PY) -m bench.soak

latent-report: $(FULL_STAMP)
	$(PY) -m bench.latent_report

clean:
	rm -rf $(VENV) .tools .pytest_cache
