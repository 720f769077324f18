#!/usr/bin/env bash
# The kernels' GPU check in one go, for whoever has a CUDA machine (none was lent when they were written):
#   bash labcli/kernels/gpu_check.sh [OUT]      (from the repository root; PYTHON=... to pick the interpreter)
# 1. compiles every kernel for this GPU's architecture (ptxas; shared memory per config),
# 2. runs the kernel tests compiled on CUDA, including the @gpu ones (bf16, the timed tiny bench),
# 3. runs `lab bench kernels` at its GPU sizes (fp16/bf16, N up to 16384, Llama-3-8B NF4 shapes),
# and keeps every output under OUT (default runs/gpu-check-TIME). Copy OUT/bench/report.md's tables and
# its "GPU goals" lines into docs/results/kernels.md. Takes roughly 10 minutes on an H100 (most of it
# the autotuner compiling each attention config once per head dim, dtype and mask).
set -euo pipefail
PY=${PYTHON:-python}
OUT=${1:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
unset TRITON_INTERPRET
export TRITON_DEFAULT_FP_FUSION=1 LAB_THREADS=${LAB_THREADS:-4}

if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: torch sees no CUDA device (hint: this script is for a GPU machine; on a CPU run make test)" >&2
  exit 2
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
$PY -c "import torch, triton, bitsandbytes as b; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'triton', triton.__version__, 'bitsandbytes', b.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt"
ARCH=$($PY -c "import torch; a, b = torch.cuda.get_device_capability(); print(10 * a + b)")

echo "== 1/3 compile check sm_$ARCH"
TRITON_INTERPRET=0 $PY -m labcli.kernels.compile_check --arch "$ARCH" --all-configs > "$OUT/compile_sm$ARCH.json" \
  && echo "compile check -> $OUT/compile_sm$ARCH.json" || echo "compile check FAILED (see above)"

echo "== 2/3 kernel tests on CUDA"
status=0
$PY -m pytest -q -p no:cacheprovider tests/lib/kernels tests/recipes/bench/test_kernels.py 2>&1 \
  | tee "$OUT/pytest.txt" || status=$?

echo "== 3/3 lab bench kernels"
$PY -m labcli bench kernels --output "$OUT/bench" 2>&1 | tee "$OUT/bench.txt" || status=$?

echo "gpu check: tests and bench exit status $status; outputs in $OUT"
exit $status
