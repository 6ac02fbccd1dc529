# xtrans developer entry points.
#   make install   virtual environment in .venv with the package (editable) and its train, dev, synth, onnx, serve extras
#   make test      the CPU test suite (test/ and the torch-free runtime's tests test_runtime/)
#   make test-runtime  test_runtime/ again in a second environment, .venv-runtime, that installs only
#                  ".[runtime]" (no torch), against an export and references the main environment writes
#   make demo      the embedded mini_synth recipe, all stages (installs only what it needs: ".[train,synth]")
#   make gpu-check the GPU check (tools/gpu_check.sh; at most 8 minutes on one H200), JSON in gpu_check_out/
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch installs from the local wheel cache in seconds; a GPU user
# installs xtrans into an environment that already has their CUDA torch (pip install -e ".[train,dev]").
# A deployment without torch installs ".[runtime]" (the ONNX recognizer, server and client).
TORCH  ?= torch==2.13.0

.PHONY: install test test-runtime demo bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[train,dev,synth,onnx,serve]"
	touch $(VENV)/.installed-demo $@

# the demo needs the training stack and the synthesiser, not the test, export and server extras
# (a fresh clone's first command)
$(VENV)/.installed-demo: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[train,synth]"
	touch $@

test: install
	$(PY) -m pytest -q -ra test test_runtime

# The deployment install: pip wheels of ".[runtime]" and pytest, no torch (checked). The tests run
# from the installed package (pytest's script, not python -m pytest: the checkout is not on sys.path).
RUNTIME_VENV := .venv-runtime
RUNTIME_REFS := .runtime_refs
test-runtime: install
	rm -rf $(RUNTIME_VENV) $(RUNTIME_REFS) build
	OMP_NUM_THREADS=1 $(PY) -m xtrans.testing.runtime_fixtures $(RUNTIME_REFS)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install -q ".[runtime]" "pytest>=7"
	@if $(RUNTIME_VENV)/bin/python -c "import torch" 2>/dev/null; then \
		echo "error: $(RUNTIME_VENV) has torch; xtrans[runtime] must not install it" >&2; exit 1; fi
	XTRANS_RUNTIME_REFS="$(abspath $(RUNTIME_REFS))" $(RUNTIME_VENV)/bin/pytest -q -ra -p no:cacheprovider test_runtime

demo: $(VENV)/.installed-demo
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
	rm -rf $(VENV) $(RUNTIME_VENV) $(RUNTIME_REFS) build *.egg-info
