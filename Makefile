# Everything runs from a fresh clone with nothing but python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
TRANSFORMERS4 := $(VENV)/transformers4
TRAINERS := $(VENV)/trainers
TRAINER_PINS := tests/requirements-torchtitan.txt tests/requirements-megatron.txt \
	tests/requirements-olmo.txt tests/requirements-haliax.txt
TRAINER_PIP := $(BIN)/python -m pip install --quiet --no-deps --only-binary :all: --target

.PHONY: install install-test demo test test-fast lint format bench gpu-check clean

install: $(STAMP)

# Reinstall only when the dependency set changes; constraints.txt pins the tested versions.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The tests also load what weightgen writes with CPU torch and transformers 5.x (the test
# extra) and 4.57.6 (beside them, in $(TRANSFORMERS4)); weightgen itself needs neither.
# The init recipes are checked against three trainers' own init (tests/test_trainers.py):
# torchtitan, megatron-core and OLMo-core, each pinned, CPU-only and in a folder of its own
# under $(TRAINERS), which only its client (tests/trainers/) puts on its path; haliax (the
# layers --init levanter follows, tests/test_jax_recipes.py) the same way. About 75 MB.
install-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP) tests/requirements-transformers4.txt $(TRAINER_PINS)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,test]'
	rm -rf $(TRANSFORMERS4) $(TRAINERS)
	$(BIN)/python -m pip install --quiet --no-deps --target $(TRANSFORMERS4) \
		-r tests/requirements-transformers4.txt
	$(TRAINER_PIP) $(TRAINERS)/torchtitan -r tests/requirements-torchtitan.txt
	$(TRAINER_PIP) $(TRAINERS)/megatron --ignore-requires-python -r tests/requirements-megatron.txt
	$(TRAINER_PIP) $(TRAINERS)/olmo -r tests/requirements-olmo.txt
	$(TRAINER_PIP) $(TRAINERS)/haliax -r tests/requirements-haliax.txt
	touch $(TEST_STAMP)

demo: $(STAMP)
	rm -f k.safetensors
	$(BIN)/weightgen he-normal --shape 3,3,64,128 -o k.safetensors
	$(BIN)/weightgen inspect k.safetensors
	@echo "weightgen is installed in $(VENV): run $(BIN)/weightgen, or 'source $(BIN)/activate' first"

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

# The quick loop while developing: everything but the tests marked slow.
test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check weightgen tests scripts
	$(BIN)/ruff format --check weightgen tests scripts

format: $(STAMP)
	$(BIN)/ruff format weightgen tests scripts
	$(BIN)/ruff check --fix weightgen tests scripts

# The benchmark needs matplotlib for its plot, and torch and transformers as anchors.
# About 15 minutes on a 2-core machine; BENCH_ARGS="--only floors --quick" runs only the
# writes set against the host's floors (1 GiB, the 1B spec and model), about 2 minutes.
bench: $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,test,bench]'
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# On a machine with a GPU and a CUDA jax, with the python that has it (no venv, no network):
# parity on the GPU, GPU vs CPU bytes, generation rates, a Llama-3-8B folder; < 5 minutes.
# GPU_CHECK_ARGS="--small" runs it small (on CPU: what the test suite does).
GPU_CHECK_ARGS ?= --out gpu_check.json
gpu-check:
	PYTHONPATH=. $(PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
