# Every target creates .venv when it is missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_MODEL := models/demo_resnet18.onnx
OUT := out

.PHONY: demo test bench bench-gpu models clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/onnxprune inspect $(DEMO_MODEL) | tail -n 4
	$(VENV)/bin/onnxprune prune $(DEMO_MODEL) -o $(OUT)/demo_pruned.onnx --ratio 0.5
	$(VENV)/bin/onnxprune verify $(DEMO_MODEL) $(OUT)/demo_pruned.onnx --samples 4
	$(VENV)/bin/onnxprune bench $(DEMO_MODEL) $(OUT)/demo_pruned.onnx --threads 1 --rounds 5 --runs 5
	@echo "--- a trained digit classifier: pruned with calibration data, accuracy checked on held-out labels"
	$(VENV)/bin/onnxprune prune models/digits_resnet.onnx -o $(OUT)/digits_pruned.onnx --ratio 0.3 --round-to 1 \
		--calib models/digits_calib.npz
	$(VENV)/bin/onnxprune verify models/digits_resnet.onnx $(OUT)/digits_pruned.onnx --data models/digits_test.npz \
		--labels models/digits_test_labels.npy --max-accuracy-drop 0.01

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# On a machine with a GPU: $(PYTHON) (python3 unless set) must have onnxruntime-gpu (and onnx, numpy, sympy, click);
# the project is taken from this folder, not installed. GPU_ARGS="--budget-s 600" or "--cpu --small" pass through.
# On the CPU with the project's .venv: make bench-gpu PYTHON=.venv/bin/python GPU_ARGS="--cpu --small".
GPU_OUT ?= bench-out/gpu
bench-gpu:
	PYTHONPATH=$(CURDIR) $(PYTHON) benchmarks/gpu.py $(GPU_OUT) $(GPU_ARGS)

models: $(STAMP)
	$(PY) -m pip install --quiet torch==2.13.0 onnxscript
	$(PY) -m models.export_torch models
	$(PY) -c "from models import zoo; import onnx; m = zoo.resnet18(width=16, image=96, num_classes=100); m.graph.name = 'demo_resnet18'; onnx.save(m, '$(DEMO_MODEL)')"
	$(PY) -m pytest -q tests/test_models_zoo.py

clean:
	rm -rf $(OUT) bench-out .pytest_cache
