#!/usr/bin/env bash
# All benchmarks on one GPU (or TPU) host in under 5 minutes; JSON and a log
# go to the folder given as $1, else $OUT, else ./benchmark_results.
#
#   pip install -e . 'jax[cuda12]'      # the project and a GPU build of JAX
#   bash benchmarks/gpu.sh /tmp/results
#   python benchmarks/report.py /tmp/results   # figures and tables
#
# Each benchmark has its own time limit, and one that fails or runs out of
# time does not stop the others (the exit code says whether all succeeded).
# Sizes suit an H100/H200-class GPU; pass EXTRA_ARGS to change every run.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmark_results}}"
mkdir -p "$out"
export TF_CPP_MIN_LOG_LEVEL=2
python=${PYTHON:-python3}
status=0

run() {  # run NAME SECONDS ARGS...: one benchmark, its JSON and its log.
  local name=$1 seconds=$2
  shift 2
  echo "=== $name ($*)" | tee -a "$out/log.txt"
  local start=$SECONDS
  timeout --kill-after=10 "$seconds" "$python" "$@" \
      --json_out="$out/$name.json" 2>&1 | tee -a "$out/log.txt"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$out/log.txt"
  [ "$rc" -eq 0 ] || status=1
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv \
    >> "$out/log.txt" 2>&1 || true

# Step throughput vs batch, bf16 and f32 (f32 runs as TF32 on the GPU).
run train_step_r18 85 benchmarks/train_step.py --models=r18_cifar32 \
    --batch_sizes=256,1024 --dtypes=bfloat16,float32 --matmul_size=8192 \
    --steps=10 --repeats=5 ${EXTRA_ARGS:-}
run train_step_r50 110 benchmarks/train_step.py --models=r50_224 \
    --batch_sizes=128,256 --dtypes=bfloat16 --matmul_size=8192 --steps=5 \
    --repeats=5 --profile_dir="$out/trace" ${EXTRA_ARGS:-}
# NT-Xent at scale, all of it timed; one device holds every row here.
run loss 40 benchmarks/loss.py --batches=1024,4096,16384 \
    --queue_sizes=0,65536 --max_timed_gflop=0 --repeats=5 ${EXTRA_ARGS:-}
# The same steps in PyTorch (skips itself when torch is missing).
# bfloat16 autocast, to pair with the JAX bfloat16 rows at batch 256.
run torch_step 40 benchmarks/torch_step.py --models=r18_cifar32,r50_224 \
    --batch_sizes=256 --dtype=bfloat16 --channels_last --steps=5 --repeats=3 \
    ${EXTRA_ARGS:-}
# Host input pipeline on this machine's cores (what feeds the GPU).
run input_pipeline 25 benchmarks/input_pipeline.py --seconds=6
exit $status
