# mm_efficientconv — one entry point.
#   make setup   create .venv with the pinned OpenMMLab stack (idempotent; first run compiles mmcv, ~20 min)
#   make test    set up if needed, then run the test suite (what CI runs)
#   make demo    set up if needed, then run the main job on scikit-learn's digits
#   make dist    set up if needed, then build the wheel and the sdist into dist/ (configs and tools in .mim)
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo benchmark dist clean

setup:
	@bash tools/setup/setup_env.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# classification, detection and segmentation (DEMO_TASKS=cls for the classification part alone)
DEMO_TASKS ?= cls det seg
demo: setup
	$(PY) tools/demo/run_demo.py --work-dir work_dirs/demo --tasks $(DEMO_TASKS)

benchmark: setup
	$(PY) tools/analysis/benchmark.py --quick --out work_dirs/benchmark/benchmark.json

# from a clean copy of the tree; the wheel's compiled op is built against .venv's torch
# (--no-ops: a pure-Python wheel that uses the PyTorch fallback)
dist: setup
	$(PY) tools/setup/build_dist.py --outdir dist

clean:
	rm -rf work_dirs .pytest_cache dist build
