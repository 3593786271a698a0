# HSNet research suite. `make setup` then `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KERNEL := hsnet
PYTEST_ARGS ?=
MARKS ?= not smoke
# pytest-xdist workers for `make test`, one thread each (tests/conftest.py; 3 measured slower than 2 here)
TEST_JOBS ?= 2
# runs at once for the long CPU grids (make smoke, make demo-ablations), each with cores / SUITE_JOBS torch threads
SUITE_JOBS ?= 2

.PHONY: setup test smoke smoke-test demo demo-ablations demo-cdfss demo-backbones lab results bench gpu-check

setup: $(BIN)/activate
	$(BIN)/pip install -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "HSNet ($(KERNEL))"

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# tests/ and the notebooks' cells (nbval, their defaults) on TEST_JOBS pytest-xdist workers (tests/conftest.py groups
# them). MARKS='not smoke and not slurm' also leaves out the tests that start a Slurm cluster.
test:
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadgroup -m "$(MARKS)" --nbval-lax --nbval-kernel-name $(KERNEL) \
		$(PYTEST_ARGS) notebooks tests

# Every run of the paper grid at a tiny budget on CPU on the synthetic benchmark (runs/smoke/paper/): which would fail.
smoke:
	$(BIN)/python -m hsnetlib.suite run grids/paper.toml --smoke --jobs $(SUITE_JOBS)

smoke-test:   # the 32 representatives of grids/paper.toml (smoke.representatives), smoked for real (minutes)
	$(BIN)/python -m pytest -q -m smoke tests/test_suite.py

# The notebook suite end to end on the synthetic benchmark (train + evaluate 4 folds, visualizations, results/).
demo:
	$(BIN)/python -m hsnetlib.suite run grids/demo.toml

# The demo's six ablation studies (each variant its own training, to convergence), then results/ again with them.
demo-ablations: demo
	$(BIN)/python -m hsnetlib.suite run grids/demo-ablations.toml --runs-dir runs/demo --jobs $(SUITE_JOBS)
	$(BIN)/python -m hsnetlib.suite run grids/demo.toml --only results --force

# The cross-domain path (grids/cdfss.toml) on the synthetic layouts: train on pascal-all (FSS-1000 val selection),
# evaluate on Deepglobe, ISIC, Chest X-ray, FSS-1000; results/ rewritten from everything under runs/demo/.
demo-cdfss:
	$(BIN)/python -m hsnetlib.suite run grids/demo-cdfss.toml --runs-dir runs/demo

# HSNet with each new backbone at demo scale (random weights, 56/64 px; README "Backbones"), then results/ again
# with them ("HSNet across backbones", synthetic demo section).
demo-backbones: demo
	$(BIN)/python -m hsnetlib.suite run grids/demo-backbones.toml --runs-dir runs/demo
	$(BIN)/python -m hsnetlib.suite run grids/demo.toml --only results --force

lab:  # JupyterLab with the project's kernel, "HSNet (hsnet)"
	$(BIN)/jupyter lab

bench:
	$(BIN)/python benchmarks/bench_model.py

results:
	$(BIN)/python -m hsnetlib.results --runs runs --out results

gpu-check:  # needs a CUDA GPU; figures go to benchmarks/README.md ("GPU check")
	$(BIN)/python benchmarks/gpu_check.py --out runs/gpu-check
