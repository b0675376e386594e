# d2ext: `make demo` and `make test` set up what they need (tools/setup_env.sh).
# PYTHON=/path/to/python uses that environment instead of ./.venv.
PY := $(if $(PYTHON),$(PYTHON),.venv/bin/python)
DEMO_CONFIG ?= configs/maskformer/toy/maskformer_R18_toy_panoptic.yaml
DEMO_OUT ?= output/demo
DATASETS_ROOT := $(or $(DETECTRON2_DATASETS),datasets)
# MaskFormer on toy panoptic (PQ, mask AP and mIoU from one model), on a shorter
# schedule than the config's 1000 iterations (poly LR follows MAX_ITER), so the
# demo takes minutes on 2 cores. DEMO_CONFIG=... runs any other config.
DEMO_OPTS ?= SOLVER.MAX_ITER 400 SOLVER.CHECKPOINT_PERIOD 100000

.PHONY: setup test demo bench

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests -q -p no:cacheprovider

demo: setup
	$(PY) train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUT) $(DEMO_OPTS)
	$(PY) tools/demo.py --config-file $(DEMO_CONFIG) --input "$(DATASETS_ROOT)/toy/images/val/*.png" \
		--output $(DEMO_OUT)/overlays --max-images 8 MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth
	@$(PY) tools/summarize_runs.py $(DEMO_OUT)
	@echo "overlays: $(DEMO_OUT)/overlays"

bench: setup
	$(PY) tools/benchmark.py --config-file $(DEMO_CONFIG) --task inference --device cpu \
		--output $(DEMO_OUT)/benchmark.json MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth
