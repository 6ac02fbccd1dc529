# xtrans developer entry points.
#   make install   virtual environment in .venv with the package (editable) and its dev, synth, onnx, serve extras
#   make test      the CPU test suite
#   make demo      the embedded mini_synth recipe, all stages
#   make gpu-check the GPU check (tools/gpu_check.sh; at most 8 minutes on one H200), JSON in gpu_check_out/
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch installs from the local wheel cache in seconds; a GPU user
# installs xtrans into an environment that already has their CUDA torch (pip install -e .).
TORCH  ?= torch==2.13.0

.PHONY: install test demo bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,synth,onnx,serve]"
	touch $@

test: install
	$(PY) -m pytest -q -ra test

demo: install
	cd egs/mini_synth/asr1 && ./run.sh

bench: install
	$(PY) bench/rnnt_loss.py
	$(PY) bench/encoder.py
	$(PY) bench/streaming.py
	$(PY) bench/onnx.py
	$(PY) bench/serve.py

# installs nothing; PYTHON_GPU names a python with a CUDA torch and xtrans (default: .venv/bin/python
# when it exists, else python3)
PYTHON_GPU ?=
GPU_CHECK_OUT ?= gpu_check_out
gpu-check:
	PYTHON="$(PYTHON_GPU)" bash tools/gpu_check.sh --out $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) *.egg-info
