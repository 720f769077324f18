#!/usr/bin/env bash
# lab's GPU check, the one script for a CUDA machine (docs/gpu-results.md holds what it printed on an H200).
#   bash labcli/devtools/gpu_check.sh OUT_DIR [SECONDS]
# From the repository root. Wheels for packages the machine lacks may wait in .whl/ (installed into
# /tmp/site first). Every step has its own time limit and the whole stays inside SECONDS (default
# 500), so the log and the run folders (OUT_DIR/log.txt, OUT_DIR/runs.tgz) always come back.
# Order = priority: the pytest GPU tests (Triton FlashAttention-2 and NF4 kernels, paged AdamW on
# CUDA, the kernels bench), `lab bench kernels` at its GPU sizes, DeepSpeed ZeRO on NCCL, FSDP2 on
# NCCL, the optimizer bench with bitsandbytes' real paged optimizers, QLoRA finetuning on
# bitsandbytes NF4, then every kernel compiled for this GPU's architecture (ptxas: which autotune
# configs fit its shared memory) and the rest of the kernel tests compiled on CUDA.
# Settings (environment):
#   ONLY="step names"    run just those steps (names as in STEPS below; a wrong name stops the script)
#   PYTEST_PATHS="..."   the test files of pytest-gpu (default: the kernels, paged AdamW, the kernels bench)
#   KERNELS_ARGS="..."   extra options for `lab bench kernels`, e.g. --seq-lens [2048,8192] --dtypes [bf16]
# Exits 2 at once without a CUDA device; otherwise 1 when a step failed (the last line names them).
set -u
OUT=${1:?usage: gpu_check.sh OUT_DIR [SECONDS]}
DEADLINE=$(( $(date +%s) + ${2:-500} ))
STEPS="environment pytest-gpu bench-kernels deepspeed-zero3-nccl fsdp2-nccl bench-optimizer-paged qlora-newari
  compile-check pytest-kernels-cuda"
for name in ${ONLY:-}; do
  if [[ " $(echo $STEPS) " != *" $name "* ]]; then
    echo "error: ONLY names '$name', which is not a step (hint: the steps are: $(echo $STEPS))" >&2
    exit 2
  fi
done
mkdir -p "$OUT"
export RUNS=/tmp/gpu-runs
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LAB_HOME=/tmp/gpu-lab-home TOKENIZERS_PARALLELISM=false
export LAB_THREADS=${LAB_THREADS:-4}
unset TRITON_INTERPRET  # a leftover TRITON_INTERPRET=1 would run every kernel in the CPU interpreter
exec > >(tee -a "$OUT/log.txt") 2>&1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || echo "wheel install failed"
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
LAB="python3 -m labcli"
if ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: torch sees no CUDA device (hint: this script is for a GPU machine; on a CPU run make test)" >&2
  exit 2
fi
mkdir -p $RUNS
FAILED=""

step() {  # step NAME SECONDS COMMAND...: run with a limit that keeps 20 s for packing up
  local name=$1 limit=$2; shift 2
  if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then return; fi
  local left=$(( DEADLINE - $(date +%s) - 20 ))
  if (( left < 15 )); then echo "=== $name: SKIPPED (no time left)"; return; fi
  (( limit > left )) && limit=$left
  echo "=== $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout --signal=KILL "$limit" "$@"
  local code=$?
  echo "=== $name: exit $code after $(( $(date +%s) - t0 )) s"
  (( code == 0 )) || FAILED="$FAILED $name"
}

step environment 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "
import torch, triton, transformers, bitsandbytes, peft
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0), \"triton\", triton.__version__,
      \"transformers\", transformers.__version__, \"bitsandbytes\", bitsandbytes.__version__, \"peft\", peft.__version__)
try:
    import deepspeed; print(\"deepspeed\", deepspeed.__version__)
except Exception as exc: print(\"deepspeed: not importable:\", exc)
"'

step pytest-gpu 200 python3 -m pytest -q -m gpu -p no:cacheprovider --timeout 180 \
  ${PYTEST_PATHS:-tests/lib/kernels tests/lib/optim/test_paged_adamw.py tests/recipes/bench/test_kernels.py}

step bench-kernels 120 $LAB bench kernels ${KERNELS_ARGS:-} --output $RUNS/bench-kernels

step deepspeed-zero3-nccl 90 bash -c "$LAB finetune tiny-lm vocab_size=500 train.max_steps=20 train.batch_size=8 \
  train.micro_batch_size=4 train.strategy=single --output $RUNS/tiny-lm-single && \
  $LAB finetune tiny-lm vocab_size=500 train.max_steps=20 train.batch_size=8 train.micro_batch_size=4 \
  train.strategy=deepspeed train.zero_stage=3 --output $RUNS/tiny-lm-zero3 && python3 -c \"
import json
a, b = (json.load(open('$RUNS/tiny-lm-' + k + '/summary.json')) for k in ('single', 'zero3'))
print('final loss single', a.get('final_loss'), 'zero3', b.get('final_loss'))\""

step fsdp2-nccl 60 torchrun --standalone --nproc_per_node 1 -m labcli.devtools.gpu_fsdp_check

step bench-optimizer-paged 90 $LAB bench optimizer --paged "strategies=[single]" train.max_steps=20 \
  --output $RUNS/bench-optimizer

step qlora-newari 120 $LAB finetune newari --method qlora train.max_steps=200 --output $RUNS/newari-qlora

step compile-check 90 bash -c 'arch=$(python3 -c "import torch; a, b = torch.cuda.get_device_capability(); print(10 * a + b)")
  python3 -m labcli.kernels.compile_check --arch $arch --all-configs > $RUNS/compile-sm$arch.json &&
  echo "compile check for sm_$arch: $RUNS/compile-sm$arch.json"'

step pytest-kernels-cuda 150 python3 -m pytest -q -m "not gpu" -p no:cacheprovider --timeout 140 \
  tests/lib/kernels tests/recipes/bench/test_kernels.py

tar -czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' --exclude='checkpoints' -C $RUNS . 2>/dev/null
echo "=== done: $(ls $RUNS | tr '\n' ' ')"
if [[ -n "$FAILED" ]]; then
  echo "=== failed:$FAILED"
  exit 1
fi
