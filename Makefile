# voxloop: `make demo` runs the product on the bundled models, `make test` runs the tests.
# Both bootstrap a fresh machine first (Debian packages, .venv); that is quick once done.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

# pytest runs with CI=true unless the caller set CI (CI runners set it themselves; .ci/run
# only calls `make test`): tests/conftest.py then loads Hypothesis's derandomized "ci"
# profile, so a failing run fails again on rerun. `CI=false make test` explores at random.
CI_ENV = CI=$${CI:-true}

.PHONY: bootstrap demo test check test-reliability test-evals lint bench clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@scripts/demo.sh

# pytest processes for `make test` (pytest-xdist; each loads its own models, ~2 GB): half
# the tests wait on real-time audio, servers and browsers, so two share two cores well
TEST_WORKERS ?= 2

# the full suite (all but the long reliability runs and the long evaluations, which
# test-reliability and test-evals add); a test file stays in one worker, with its fixtures
test: bootstrap
	$(VENV)/bin/ruff check .
	$(CI_ENV) $(PY) -m pytest -q -rfEs -n $(TEST_WORKERS) --dist loadfile --durations=10

# before each commit: ruff and the fast tests (about 50 s of CPU: under a minute on 2 idle
# cores). No `slow` test (those load real models: Whisper, TTS voices, the engines, the
# bundled codec or student; or run a job or a property search) and no `reliability_slow`.
check: bootstrap
	$(VENV)/bin/ruff check .
	$(CI_ENV) $(PY) -m pytest -q -rfEs -m "not slow and not reliability_slow" --durations=5

# fuzzing, churn, slow clients, limits, SIGTERM, killed jobs, each server test on both
# engines (about 15 minutes on 2 cores; `make test` runs its fast part; pyproject's
# addopts deselect reliability_slow there)
test-reliability: bootstrap
	$(CI_ENV) $(PY) -m pytest tests/reliability -m "" -q -s -rfEs --durations=20

# how Whisper hears every catalogued TTS voice on 30 domain questions: the table (printed)
# and intent accuracy on what it heard (about 5 minutes; `make test` asserts the clear
# voices' WER on fewer questions)
test-evals: bootstrap
	$(CI_ENV) $(PY) -m pytest -m eval_slow -q -s -rfEs --durations=5

# voice-to-voice latency, native vs cascade, 1-8 sessions (about 10 minutes; out/bench-latency)
bench: bootstrap
	$(VENV)/bin/voxloop bench latency

lint: bootstrap
	$(VENV)/bin/ruff check .

clean:
	rm -rf out .pytest_cache .ruff_cache
