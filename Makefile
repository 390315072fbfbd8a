# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch comes first: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: install demo test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/faceblocks demo $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest -q

# Needs ../shared/data (FER2013); figures and commands are in BENCHMARKS.md.
bench: install
	$(BIN)/python benchmarks/bench_landmarks.py ../shared/data/fer2013 --split test
	$(BIN)/python benchmarks/bench_detection.py photos ../shared/data/photos --repeats 3
	$(BIN)/python benchmarks/bench_preprocess.py fer2013 --images 3000 --repeats 3 --jobs 2
	$(BIN)/python benchmarks/bench_predict.py fer ../shared/data/fer2013 --images 600 --repeats 3
	$(BIN)/python benchmarks/bench_train.py throughput --threads 1 --steps 15 --sizes 16x48,16x32,48x48

clean:
	rm -rf $(VENV) $(DEMO_OUT) *.egg-info .pytest_cache
