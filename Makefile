# ComfyUI-F1. `make demo` renders an image through a real ComfyUI; `make test` runs every test.
PY := .venv/bin/python
COMFYUI_DIR ?=
TINY := models/f1-tiny-random.safetensors

.PHONY: setup demo test serve workflows

setup:
	@COMFYUI_DIR="$(COMFYUI_DIR)" bash scripts/setup.sh

$(TINY): | setup
	$(PY) -m f1core.make_tiny $(TINY)

demo: setup
	@$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest -q

serve: setup
	$(PY) $${COMFYUI_DIR:-.comfyui}/main.py --cpu --listen 127.0.0.1 --port 8188 --disable-auto-launch --preview-method auto

workflows: setup $(TINY)
	$(PY) scripts/workflows.py
