# voxloop: `make demo` runs the product on the bundled models, `make test` runs the tests.
# Both bootstrap a fresh machine first (Debian packages, .venv); that is quick once done.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: bootstrap demo test test-all test-reliability lint bench clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@scripts/demo.sh

test: bootstrap
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -rfEs --durations=10

# fuzzing, churn, slow clients, limits, SIGTERM, killed jobs (about 15 minutes on 2 cores;
# `make test` runs its fast part; pyproject's addopts deselect reliability_slow there)
test-reliability: bootstrap
	$(PY) -m pytest tests/reliability -m "" -q -s -rfEs --durations=20

# voice-to-voice latency, native vs cascade, 1-8 sessions (about 10 minutes; out/bench-latency)
bench: bootstrap
	$(VENV)/bin/voxloop bench latency

lint: bootstrap
	$(VENV)/bin/ruff check .

clean:
	rm -rf out .pytest_cache .ruff_cache
