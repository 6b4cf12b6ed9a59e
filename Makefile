# Two entry points on a fresh machine (Python 3.11, pip, make, git):
#   make demo   -- set up .venv and run the federated, blindly aggregated DP demo
#   make test   -- set up .venv and run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench fuzz adversary clean

$(STAMP): requirements.lock.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/pip install -q --disable-pip-version-check pytest hypothesis ruff pytest-timeout pytest-xdist
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/securediff demo

test: $(STAMP)
	$(BIN)/ruff check securediff protocols audits cli tests
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The secagg benchmark runs Flower's own SecAgg+ code (flwr is also in requirements.lock.txt now).
bench: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check flwr==1.42.0
	$(BIN)/python benchmarks/run.py

# The adversarial secagg aggregator search at 5,000 examples (the tests run 300).
adversary: $(STAMP)
	SECUREDIFF_ADVERSARY_EXAMPLES=5000 $(BIN)/python -m pytest -p no:cacheprovider \
		tests/protocols/test_secagg_leakage.py -k no_aggregator --hypothesis-show-statistics

# 100,000 mutated messages of every protocol through the decoder (tests run 500).
fuzz: $(STAMP)
	SECUREDIFF_FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest -p no:cacheprovider \
		tests/protocols/test_fuzz_protocol_messages.py -k mutated --hypothesis-show-statistics
	@if $(BIN)/pip install -q --disable-pip-version-check atheris==2.3.0; then \
		$(BIN)/python tests/protocols/atheris_messages.py -runs=1000000 -max_len=8192; \
	else echo "atheris did not install here: coverage-guided fuzzing skipped"; fi

clean:
	rm -rf $(VENV) runs .pytest_cache
