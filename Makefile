# The two commands a user needs: `make demo` and `make test` (both run `make setup` first).
VENV   := .venv
NLPERF := $(VENV)/bin/nlperf
PYTEST := $(VENV)/bin/pytest

.PHONY: setup setup-test demo test test-host test-vm lint bench soak clean

setup:
	@bash scripts/setup.sh

# What only the tests need on top: a headless browser that opens the HTML report.
setup-test:
	@bash scripts/setup.sh --test

# The headline scenario through the lab; prints the report path.
demo: setup
	$(NLPERF) run scenarios/processing-models.yaml

# Pure-Python tests and the end-to-end run on the host, then everything that needs the
# module or probes inside one lab VM boot.
test: setup-test lint test-host test-vm

lint:
	$(VENV)/bin/ruff check nlperf tests

test-host:
	$(PYTEST) -q --durations=15 tests --ignore=tests/vm

# One boot per lab kernel (Debian's 6.1 and 6.12): the module and probes must work on both.
# The signal trials (tests/vm/test_interrupts.py, ~4 min under TCG: each run compiles the probes)
# test nlperf's own clean-up, so they run on the first (newest) kernel only; `make soak` runs
# ten of them on every kernel.
test-vm:
	@set -e; skip=""; for k in $$($(VENV)/bin/python -m nlperf.targets.vm --lab-kernels); do \
		echo "== lab VM tests on $$k"; \
		$(NLPERF) vm exec --kernel $$k --timeout 1200 -- $(abspath $(PYTEST)) -q -p no:cacheprovider --durations=15 tests/vm $$skip; \
		skip="--ignore=tests/vm/test_interrupts.py"; \
	done

bench: setup
	$(NLPERF) vm exec --timeout 1800 -- $(abspath $(VENV)/bin/python) -m nlperf.bench

# Long counts: the module under abuse with full counts (>= 100 000 malformed datagrams per
# model and sender, 20 unloads under load per model, 100 load cycles) and ten signal trials
# on every lab kernel,
# then the overrun scenario.
soak: setup
	@set -e; for k in $$($(VENV)/bin/python -m nlperf.targets.vm --lab-kernels); do \
		echo "== soak on $$k"; \
		$(NLPERF) vm exec --kernel $$k --timeout 7200 -- env NLPERF_SOAK=1 \
			$(abspath $(PYTEST)) -q -p no:cacheprovider tests/vm/test_faults.py tests/vm/test_interrupts.py; \
	done
	$(NLPERF) run scenarios/multicast-overrun.yaml --timeout 7200

clean:
	rm -rf build
