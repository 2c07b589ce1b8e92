# Everything runs from a fresh clone with nothing but python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench clean

install: $(STAMP)

# Reinstall only when the dependency set changes; constraints.txt pins the tested versions.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -f k.safetensors
	$(BIN)/weightgen he-normal --shape 3,3,64,128 -o k.safetensors
	$(BIN)/weightgen inspect k.safetensors

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The quick loop while developing: everything but the tests marked slow.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check weightgen tests scripts
	$(BIN)/ruff format --check weightgen tests scripts

format: $(STAMP)
	$(BIN)/ruff format weightgen tests scripts
	$(BIN)/ruff check --fix weightgen tests scripts

# The benchmark needs matplotlib for its plot; torch is used as an anchor when installed.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
