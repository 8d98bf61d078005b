#!/usr/bin/env bash
# Prepare a CPU-only Python env to run ComfyUI (library + main.py server) offline
# for integration tests. Verified against Comfy-Org/ComfyUI a125cd84 (0.3.64).
#
# Usage: setup_comfyui.sh COMFYUI_PATH PYTHON [STUB_PARENT]
#   COMFYUI_PATH  an already extracted ComfyUI source tree (has requirements.txt)
#   PYTHON        the venv's python (torch CPU must already be installed in it)
#   STUB_PARENT   folder that receives the import-only torchvision stub
#                 (default: $COMFYUI_PATH/../comfyui_stubs); put it on PYTHONPATH.
set -euo pipefail
COMFYUI_PATH=$(cd "${1:?COMFYUI_PATH}" && pwd)
PY=${2:?venv python}
STUBS=${3:-$(dirname "$COMFYUI_PATH")/comfyui_stubs}

# Pin the torch that is already installed: without this, anything depending on
# torch (torchsde, ...) may pull a CUDA torch plus several GB of CUDA wheels.
TORCH_VER=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
CONS=$(mktemp); trap 'rm -f "$CONS"' EXIT
echo "torch==$TORCH_VER" > "$CONS"

# Take the three frontend/template/docs pins from ComfyUI's own requirements.txt.
PINS=$(grep -E '^comfyui-(frontend-package|workflow-templates|embedded-docs)==' "$COMFYUI_PATH/requirements.txt" || true)

# Library needs (comfy.sd, comfy.sample, nodes) + server needs (main.py).
# Deliberately skipped: torchvision, torchaudio, kornia, spandrel (no CPU builds
# without replacing torch; only some comfy_extras nodes need them and those just
# log "IMPORT FAILED").
# shellcheck disable=SC2086
"$PY" -m pip install -q -c "$CONS" \
  einops "numpy>=1.25.0" Pillow psutil "safetensors>=0.4.2" tqdm pyyaml scipy torchsde \
  "transformers<5" tokenizers sentencepiece "av>=14.2.0" \
  "aiohttp>=3.11.8" "yarl>=1.18.0" alembic SQLAlchemy requests "pydantic~=2.0" "pydantic-settings~=2.0" \
  $PINS

# Import-only torchvision stub: comfy/ldm/{cascade,cosmos,ace} import torchvision
# at module level and comfy.sd / model_base import those modules transitively.
if ! "$PY" -c 'import torchvision' 2>/dev/null; then
  mkdir -p "$STUBS/torchvision"
  cat > "$STUBS/torchvision/__init__.py" <<'EOF'
# Import-only stub for ComfyUI integration tests (no real torchvision API).
from . import transforms  # noqa: F401
__version__ = "0.0.0+stub"
def __getattr__(name):
    raise AttributeError(f"torchvision stub: '{name}' is not available (import-only stub)")
EOF
  cat > "$STUBS/torchvision/transforms.py" <<'EOF'
# Import-only stub for `from torchvision import transforms`.
def __getattr__(name):
    raise AttributeError(f"torchvision.transforms stub: '{name}' is not available")
EOF
fi

# Smoke check: library import with the stub on the path; torch must be unchanged.
PYTHONPATH="$STUBS${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$COMFYUI_PATH" "$TORCH_VER" <<'EOF'
import sys; sys.path.insert(0, sys.argv[1])
from comfy.cli_args import args; args.cpu = True
import torch, comfy.sd, comfy.sample, nodes  # noqa: F401,E401
assert torch.__version__.split("+")[0] == sys.argv[2], torch.__version__
print("ComfyUI import OK; torch", torch.__version__)
EOF
echo "Done. Use: PYTHONPATH=$STUBS  (ComfyUI at $COMFYUI_PATH)"
