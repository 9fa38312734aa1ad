# The two commands a newcomer types: `make train` and `make test`.
# Both create .venv from setup.cfg on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Extra flags for the training program, e.g. make train TRAIN_FLAGS="--env=Breakout-v5"
TRAIN_FLAGS ?=
PYTEST_FLAGS ?=

.PHONY: train test bench bench-gpu install clean reproduce-minatar reproduce-atari

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) -m experiments.train $(TRAIN_FLAGS)

# Two pytest-xdist workers, one test file each at a time (module fixtures
# such as the wheel build run once): the tests are independent (own tmp
# dirs, free ports, subprocesses), and on 2 cores most of them wait on a
# subprocess or a compile; --durations lists the slowest.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 $(PYTEST_FLAGS) tests

# The MinAtar results table from scratch (4 games x 3 seeds, 10M steps each,
# then 100 evaluation games per run); resumable: re-run to continue.
reproduce-minatar: $(STAMP)
	$(PY) -m experiments.reproduce --suite=minatar --root=runs/minatar

# Atari from pixels on this CPU: Pong-v5 to 20M frames (cpu_pong, ~70 min on
# 2 cores) and the `make train` game (2 seeds), then 30 evaluation games
# each; resumable.
reproduce-atari: $(STAMP)
	$(PY) -m experiments.reproduce --suite=atari --root=runs/atari

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m experiments.benchmark_vtrace

# The accelerator suite (issue 17): one JSON + one Markdown table in ~8 min.
bench-gpu: $(STAMP)
	$(PY) -m experiments.gpu_suite --json=bench_results/gpu_suite.json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
