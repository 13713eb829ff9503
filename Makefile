# The README's commands. Each target sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages used when apt-get is usable: the Fashion-MNIST IDX files for every target;
# for `make test` also a browser for page tests, and PostgreSQL for the tests of tune studies
# shared through a database.
DEB_PACKAGES := dataset-fashion-mnist
TEST_DEB_PACKAGES := $(DEB_PACKAGES) chromium chromium-driver postgresql

.PHONY: train test check lint system test-system data bench clean grpc-code

# uv installs the packages. convnet's own venv is byte-compiled as it is installed (16.6 s of
# its 21 s), so that `convnet` starts as fast in a shell that sets PYTHONDONTWRITEBYTECODE. The
# tests' extras are not (that compiled every file of 300 packages: 24 s of a 27 s install); the
# Makefile's commands run without PYTHONDONTWRITEBYTECODE, so Python writes each module's bytecode
# at its first import, and only the modules the suite uses are compiled (without bytecode, every
# process would compile what it imports anew: importing TensorFlow took 11.2 s instead of 3.7).
# pip stays for torch alone: the CPU build these machines carry on disk is found through pip's
# configuration, which uv does not read (any torch>=2.4 works; PyPI's default Linux build is the
# CUDA one, several GB). Only `make test` installs torch, alone, then uv finds it installed and
# adds its dependencies.
unexport PYTHONDONTWRITEBYTECODE
TORCH ?= torch==2.13.0
UV := uv>=0.9
UV_INSTALL = $(1)/bin/uv pip install --quiet --python $(1)/bin/python
TEST_DEPS := $(VENV)/.test-deps
# The protocol clients the serving tests drive, apart from convnet's venv (tests/clients/).
CLIENTS := .venv-clients/.installed

$(BIN)/convnet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet '$(UV)'
	@# A venv made before convnet depended on `tensorflow` has `tensorflow-cpu`, whose files the
	@# other would overwrite: remove it first.
	$(BIN)/uv pip uninstall --quiet --python $(BIN)/python tensorflow-cpu
	$(call UV_INSTALL,$(VENV)) --compile-bytecode -e .
	touch $@

# The tests' extras: every backend and the dev tools.
$(TEST_DEPS): $(BIN)/convnet
	$(BIN)/pip install --quiet --no-compile --no-deps '$(TORCH)'
	$(call UV_INSTALL,$(VENV)) -e '.[dev,jax,litert,torch,track]'
	touch $@

$(CLIENTS): tests/clients/requirements.txt
	$(PYTHON) -m venv .venv-clients
	.venv-clients/bin/pip install --quiet '$(UV)'
	$(call UV_INSTALL,.venv-clients) -r tests/clients/requirements.txt
	touch $@

system:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "apt-get install $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif [ -n "$$missing" ]; then \
		echo "note: not installing Debian packages ($$missing): needs root and apt-get"; \
	fi

# The tests' packages too: `make test` and `make check`.
test-system:
	@$(MAKE) --no-print-directory system DEB_PACKAGES='$(TEST_DEB_PACKAGES)'

data: system $(BIN)/convnet
	$(BIN)/convnet fetch

train: data
	$(BIN)/convnet train --preset seed

# The three installs at once (Debian packages, convnet's venv, the clients' venv): they share no
# files. Then the suite in two processes (pytest-xdist), a test module to each at a time, so that
# a module's fixtures (a trained run, a server) are made once, in the order tests/conftest.py
# gives the modules, the longest first.
test:
	$(MAKE) --no-print-directory -j3 test-system $(TEST_DEPS) $(CLIENTS)
	$(MAKE) --no-print-directory data
	$(BIN)/pytest -n 2 --dist loadscope --no-loadscope-reorder

lint: $(TEST_DEPS)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The inner loop: lint, the import contracts, and the tests that train nothing (`trains` and
# `slow` left out; under CONVNET_CHECK, Keras' fit refuses, so a test that trains unmarked fails),
# in two processes (pytest-xdist).
check: test-system data $(TEST_DEPS)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports
	CONVNET_CHECK=1 $(BIN)/pytest -q -n 2 -m "not trains and not slow"

bench: data $(TEST_DEPS)
	$(BIN)/python -m bench.time_to_accuracy

# The Open Inference Protocol's gRPC code (convnet/serving/grpc/*_pb2*), made from its .proto by
# grpcio-tools in a throwaway venv: installed in .venv, it would replace convnet's protobuf. 1.74's
# code needs grpcio >= 1.74 and protobuf >= 6.31.1, the floors in pyproject.toml.
GRPC_TOOLS := grpcio-tools==1.74.0
GRPC_PROTO := convnet/serving/grpc/grpc_predict_v2.proto

grpc-code:
	tmp=$$(mktemp -d) && $(PYTHON) -m venv $$tmp && $$tmp/bin/pip install --quiet $(GRPC_TOOLS) \
	&& $$tmp/bin/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	$(GRPC_PROTO); status=$$?; rm -rf $$tmp; exit $$status

clean:
	rm -rf $(VENV) .venv-clients runs .pytest_cache
