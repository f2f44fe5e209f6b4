#!/usr/bin/env bash
# flowrl GPU check: install what is missing, then run benchmarks/gpu_check.py into $OUT.
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options]   # on the GPU machine, from the repo root
#   bash benchmarks/gpu_check.sh --prepare-wheels          # here, with a package index: fill .whl/
#
# A GPU machine of this workplace reaches no package index: its python3 already holds a CUDA
# torch and triton, and flowrl's pure-Python needs that it lacks (pydantic and its three
# helpers) travel as wheels in .whl/ (gitignored; name it in the device tool's `carry`).
# Where an index is reachable, missing packages are pip-installed instead, each time-boxed.
# vLLM goes into its own venv (its torch pin must not replace the CUDA torch the kernels
# use); its wheel (~400 MB) is too large to carry, so without an index the section is skipped.
# Writes $OUT/gpu_check.json, $OUT/gpu_check.md, $OUT/gpu_check.log, $OUT/install.log.
# Exit code: gpu_check.py's (1: a kernel disagrees with its reference; 2: no usable device).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=python3
WHL="$ROOT/.whl"
# flowrl's import-time needs that a CUDA image may lack, pinned to what CI tests with
FLOWRL_WHEELS=(pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

prepare_wheels() {
  mkdir -p "$WHL"
  local plat=()
  for p in "${PLATFORMS[@]}"; do plat+=(--platform "$p"); done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${plat[@]}" -d "$WHL" "${FLOWRL_WHEELS[@]}"
  echo "wheels for the GPU machine's python 3.12 in $WHL:"
  ls -1 "$WHL"
  echo "run there with carry [\".whl\"]: bash benchmarks/gpu_check.sh"
}

if [[ "${1:-}" == "--prepare-wheels" ]]; then
  prepare_wheels
  exit 0
fi

OUT="${OUT:-$ROOT/runs/gpu_check}"
mkdir -p "$OUT"
LOG="$OUT/install.log"
: >"$LOG"
note() { echo "[gpu_check.sh] $*" | tee -a "$LOG"; }

cat <<EOF
[gpu_check.sh] plan
  1. python3 with a CUDA build of torch and triton (pip install only if missing and an index answers)
  2. flowrl's needs (pydantic, networkx, yaml, rich, numpy): from .whl/ if carried, else pip
  3. vLLM in /tmp/vllm-venv if an index answers (at most 100 s), else the vLLM section is skipped
  4. python3 benchmarks/gpu_check.py --out $OUT $*   (kernels, cost model, vLLM; about 7 minutes)
EOF

index_reachable() {  # a pip index answers within seconds (no network: fails fast)
  timeout 20 "$PY" -m pip download -q --no-deps --no-cache-dir --retries 0 --timeout 5 \
    -d /tmp/gpu-check-pip-probe pip >>"$LOG" 2>&1
}
HAVE_INDEX=0
if index_reachable; then HAVE_INDEX=1; fi
note "package index reachable: $([[ $HAVE_INDEX == 1 ]] && echo yes || echo no)"
CPU_RUN=0  # --device cpu (a dry run of the paths): no CUDA torch, no vLLM to install
HAVE_GPU=0
WANT_VLLM=1
args=" $* "
[[ "$args" == *" --device cpu "* || "$args" == *" --device=cpu "* ]] && CPU_RUN=1
[[ "$args" == *" --skip-vllm "* ]] && WANT_VLLM=0
nvidia-smi -L >>"$LOG" 2>&1 && HAVE_GPU=1
note "GPU seen by nvidia-smi: $([[ $HAVE_GPU == 1 ]] && echo yes || echo no); CPU dry run: $CPU_RUN"

# 1. torch with CUDA, triton (only where a GPU is there to use them)
if [[ $CPU_RUN == 0 && $HAVE_GPU == 1 ]] && ! "$PY" -c 'import torch, triton, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$LOG" 2>&1; then
  if [[ $HAVE_INDEX == 1 ]]; then
    note "no CUDA torch/triton in $PY: pip install torch triton (at most 240 s)"
    timeout 240 "$PY" -m pip install -q torch triton >>"$LOG" 2>&1 || note "torch install failed (see $LOG)"
  else
    note "no CUDA torch/triton in $PY and no package index: the run will report the device unusable"
  fi
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tee -a "$LOG" || true

# 2. flowrl's own needs
NEEDS='import pydantic, networkx, yaml, rich, numpy'
if ! "$PY" -c "$NEEDS" >>"$LOG" 2>&1; then
  if compgen -G "$WHL/*.whl" >/dev/null; then
    note "installing the carried wheels: $(cd "$WHL" && echo *.whl)"
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/gpu-check-site "$WHL"/*.whl >>"$LOG" 2>&1 || note "wheel install failed"
    export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
  elif [[ $HAVE_INDEX == 1 ]]; then
    note "pip install pydantic networkx pyyaml rich numpy (at most 120 s)"
    timeout 120 "$PY" -m pip install -q pydantic networkx pyyaml rich numpy >>"$LOG" 2>&1 || note "install failed"
  fi
  "$PY" -c "$NEEDS" >>"$LOG" 2>&1 || note "flowrl's needs are still missing: carry .whl (bash benchmarks/gpu_check.sh --prepare-wheels)"
fi

# 3. vLLM, in a venv that sees the system packages
VLLM_PY="$PY"
if [[ $CPU_RUN == 0 && $WANT_VLLM == 1 ]] && ! "$PY" -c 'import vllm' >>"$LOG" 2>&1; then
  if [[ $HAVE_INDEX == 1 ]]; then
    note "pip install vllm into /tmp/vllm-venv (at most 100 s)"
    if "$PY" -m venv --system-site-packages /tmp/vllm-venv >>"$LOG" 2>&1 &&
       timeout 100 /tmp/vllm-venv/bin/python -m pip install -q vllm >>"$LOG" 2>&1; then
      VLLM_PY=/tmp/vllm-venv/bin/python
    else
      note "vLLM did not install within the time (see $LOG): the vLLM section will be skipped"
    fi
  else
    note "vLLM is not installed and no package index is reachable (its ~400 MB wheel is too large to carry): the vLLM section will be skipped"
  fi
fi

# 4. the check; 480 s hard stop, the sections' own budget is --budget-s (default 420)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
rc=0  # pipefail: the pipeline's status is gpu_check.py's (or timeout's 124)
timeout 480 "$PY" benchmarks/gpu_check.py --out "$OUT" --vllm-python "$VLLM_PY" "$@" 2>&1 \
  | tee "$OUT/gpu_check.log" || rc=$?
note "gpu_check.py exit code $rc"
exit "$rc"
