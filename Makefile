# The README's commands. Each creates .venv on first use and installs the project into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all bench lint arm64-check lean-check lean-check-base lean-check-litert lean-check-onnx fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,search,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgepack run --out runs/demo --force

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not arm64" -q --durations=25

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# The base install alone (no extras, no TensorFlow) in its own environment: the runtime's tests (including the
# CI-sized fuzz run), `edgepack predict` agreement, no-TensorFlow import check, environment size and cold starts.
# Then the two one-engine device installs (README "Device install"): numpy, Pillow and one engine at pyproject's
# pins, edgepack itself with --no-deps; each must run the files of its engine and refuse the others (exit 2,
# one line naming the missing engine), and reports its size and cold starts. LEAN=/tmp/x puts all three elsewhere.
LEAN       ?= .venv-lean
LEAN_TESTS ?= tests/test_runtime.py
lean-check: lean-check-base lean-check-litert lean-check-onnx

lean-check-base:
	test -x $(LEAN)/bin/python || $(PYTHON) -m venv $(LEAN)
	$(LEAN)/bin/python -m pip install --quiet --upgrade pip
	$(LEAN)/bin/python -m pip install --quiet .
	$(LEAN)/bin/python -m pip install --quiet 'pytest>=8'  # the test runner only; not part of the install
	$(LEAN)/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)"
	$(LEAN)/bin/python -m pytest -m lean -q -p no:cacheprovider $(LEAN_TESTS)
	$(LEAN)/bin/python benchmarks/lean_check.py --expect litert,onnxruntime

lean-check-litert lean-check-onnx: lean-check-%:
	test -x $(LEAN)-$*/bin/python || $(PYTHON) -m venv $(LEAN)-$*
	$(LEAN)-$*/bin/python -m pip install --quiet --upgrade pip
	$(LEAN)-$*/bin/python -m pip install --quiet $$($(PYTHON) benchmarks/lean_check.py --requirements $*)
	$(LEAN)-$*/bin/python -m pip install --quiet --no-deps .
	$(LEAN)-$*/bin/python benchmarks/lean_check.py --expect $(if $(filter onnx,$*),onnxruntime,litert)

# The full fuzz run (2000 damaged copies per format); CI runs 200 per format inside tests/test_runtime.py.
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz_runtime.py --count 2000

# Every exported file of the demo run through the lean runtime as linux/aarch64 under qemu (three CPU models),
# compared with x86; the runtime's tests and `edgepack bench` under emulation; then the arm64-marked tests.
# Installs qemu-user-static + mmdebstrap (apt, as root) if missing; caches the aarch64 environment in .arm64/.
ARM64_RUN ?= runs/demo

arm64-check: $(STAMP)
	sh benchmarks/arm64/host_deps.sh
	test -f $(ARM64_RUN)/export/eval.npz || $(BIN)/edgepack run --out $(ARM64_RUN) --force -q --stages train,compress,export
	$(BIN)/python benchmarks/arm64/check.py $(ARM64_RUN)
	$(BIN)/python -m pytest -m arm64 -q tests/test_arm64.py

clean:
	rm -rf runs build *.egg-info src/*.egg-info
