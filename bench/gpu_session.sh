#!/usr/bin/env bash
# One command for a lent GPU (issue #19): install what is missing, build the real-size random-weight
# models once, measure in order of importance within the budget, regenerate docs/benchmarks.md.
#
#   bash bench/gpu_session.sh                 # on the GPU machine: 480 s of measuring (~8 min)
#   BUDGET=300 bash bench/gpu_session.sh      # a shorter lease
#   bash bench/gpu_session.sh --smoke --models tiny   # the CPU check the test suite runs
#
# Every extra argument goes to `python -m bench --mode gpu`. Results are written after every section
# (bench/results/gpu-<date>.json; OUT=<dir> elsewhere), so a lease that ends early still leaves
# numbers; `python -m bench --table` turns whatever is there into docs/benchmarks.md.
# Environment: PYTHON (default: .venv/bin/python if present, else python3), BUDGET (480),
# OUT (bench/results), DOCS (docs/benchmarks.md), SKIP_INSTALL=1 (use the environment as it is).
set -euo pipefail
cd "$(dirname "$0")/.."

BUDGET="${BUDGET:-480}"
OUT="${OUT:-bench/results}"
DOCS="${DOCS:-docs/benchmarks.md}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
smoke=0
for arg in "$@"; do [[ "$arg" == "--smoke" ]] && smoke=1; done
started=$(date +%s)
log() { echo "[gpu_session +$(($(date +%s) - started))s] $*" >&2; }

if [[ "${SKIP_INSTALL:-0}" != "1" && "$smoke" == "0" ]]; then
    # On a CUDA machine PyPI's torch wheel is the CUDA build; replace a CPU-only one.
    if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        log "installing the CUDA build of torch"
        "$PYTHON" -m pip install --quiet --upgrade "torch==2.13.0" \
            || log "pip could not install torch (offline?); continuing with what is installed"
    fi
    if ! "$PYTHON" -c 'import diffusers, transformers, discord, pydantic_settings' 2>/dev/null; then
        log "installing VoxCanvas and its dependencies"
        "$PYTHON" -m pip install --quiet -e . || log "pip install -e . failed; continuing"
    fi
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' >&2 || true
fi

mkdir -p "$OUT"
log "measuring (budget ${BUDGET} s)"
code=0
"$PYTHON" -m bench --mode gpu --budget "$BUDGET" --out "$OUT" --no-docs "$@" || code=$?
log "bench finished with exit code $code; writing the table"
"$PYTHON" -m bench --table --out "$OUT" --docs "$DOCS" || code=$?
log "done"
exit "$code"
