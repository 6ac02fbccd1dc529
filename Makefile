# xtrans developer entry points.
#   make install   virtual environment in .venv with the package (editable) and test extras
#   make test      the CPU test suite
#   make demo      the embedded mini_synth recipe, all stages
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch installs from the local wheel cache in seconds; a GPU user
# installs xtrans into an environment that already has their CUDA torch (pip install -e .).
TORCH  ?= torch==2.13.0

.PHONY: install test demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,synth]"
	touch $@

test: install
	$(PY) -m pytest -q -ra test

demo: install
	cd egs/mini_synth/asr1 && ./run.sh

bench: install
	$(PY) bench/rnnt_loss.py
	$(PY) bench/encoder.py
	$(PY) bench/streaming.py

clean:
	rm -rf $(VENV) *.egg-info
