# Two entry points on a fresh machine (Python 3.11, pip, make, git):
#   make demo   -- set up .venv and run the federated, blindly aggregated DP demo
#   make test   -- set up .venv and run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench fuzz adversary report-render clean

# Python's bytecode cache stays on (its default) whatever the calling shell says, so
# the set-up can skip compiling every module of every package (--no-compile: about
# 55 s of the set-up here, mostly torch modules nothing imports): the modules that
# a run imports are compiled once, on first import, and the test workers and the
# processes the tests start load them from then on instead of compiling again.
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): requirements.lock.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --no-compile -r requirements.lock.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-compile --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/securediff demo

test: $(STAMP)
	$(BIN)/ruff check securediff protocols audits cli tests
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# The secagg benchmark runs Flower's own SecAgg+ code (flwr is also in requirements.lock.txt now).
bench: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check flwr==1.42.0
	$(BIN)/python benchmarks/run.py

# The adversarial secagg aggregator search at 5,000 examples (the tests run 300). It takes
# 8 to 15 minutes on two loaded cores: the suite's 600 s per-test limit does not apply.
adversary: $(STAMP)
	SECUREDIFF_ADVERSARY_EXAMPLES=5000 $(BIN)/python -m pytest -p no:cacheprovider --timeout=0 \
		tests/protocols/test_secagg_leakage.py -k no_aggregator --hypothesis-show-statistics

# 100,000 mutated messages of every protocol through the decoder (tests run 500).
fuzz: $(STAMP)
	SECUREDIFF_FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest -p no:cacheprovider \
		tests/protocols/test_fuzz_protocol_messages.py -k mutated --hypothesis-show-statistics
	@if $(BIN)/pip install -q --disable-pip-version-check atheris==2.3.0; then \
		$(BIN)/python tests/protocols/atheris_messages.py -runs=1000000 -max_len=8192; \
	else echo "atheris did not install here: coverage-guided fuzzing skipped"; fi

# A run's report.html rendered by headless Chromium (Debian's package, installed when
# missing), and a check that the screenshot is not a blank page. RUN=path picks the
# run; default: the newest finished run in runs/, or a tiny test-mode run made here.
REPORT_SHOT ?= runs/report-screenshot.png
TINY_RUN := --data.num_clients 3 --federation.rounds 2 --federation.local_steps 3 \
	--training.personal_steps 4 --training.batch_size 16 --model.base_channels 8 \
	--eval.samples_per_class 4 --eval.evaluator_epochs 1 --diffusion.sample_steps 8
report-render: $(STAMP)
	@command -v chromium >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium; }
	@run="$(RUN)"; \
	if [ -z "$$run" ]; then run=$$(ls -td runs/*/ 2>/dev/null | grep -v '\.incomplete/$$' | head -1); fi; \
	if [ -z "$$run" ]; then run=runs/report-tiny; \
		$(BIN)/securediff train --insecure-deterministic 0 --run.out_dir runs \
			--run.name report-tiny --json $(TINY_RUN) >/dev/null || exit 3; fi; \
	run=$${run%/}; echo "run: $$run"; \
	$(BIN)/securediff report "$$run" || exit 3; \
	mkdir -p $$(dirname $(REPORT_SHOT)); \
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
		--screenshot=$(REPORT_SHOT) --window-size=1200,3000 \
		"file://$$(realpath $$run/report.html)" 2>/dev/null || exit 3; \
	$(BIN)/python tests/report/screenshot_check.py $(REPORT_SHOT)

clean:
	rm -rf $(VENV) runs .pytest_cache
