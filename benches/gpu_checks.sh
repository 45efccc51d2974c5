#!/usr/bin/env bash
# Everything a GPU must pass before its numbers count, then the numbers, in one command on a
# machine with an NVIDIA GPU and a Rust toolchain:
#
#   benches/gpu_checks.sh [OUT_DIR]        # default target/gpu-checks
#
# 1. every CUDA test target with DNVS_REQUIRE_GPU=1 (a GPU test that would skip fails instead);
# 2. the self-check in f32 and bf16 (`dnvs-engine info --check-gpu`);
# 3. `bench --device cuda` (the V-Net's convolution shapes and the training step) and the step's
#    per-kernel profile (`--profile`);
# 4. PyTorch's V-Net step on the same card in fp32, TF32 and bf16 when python3 has torch
#    (benches/compare_pytorch.py).
# Logs and JSON go to OUT_DIR. Exits 1 when a test or a self-check fails, 2 without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/gpu-checks}
mkdir -p "$OUT"
BIN=target/release/dnvs-engine
cargo build --release -q || exit 1
if ! "$BIN" info | grep -q "cuda:0 ="; then
  "$BIN" info | grep cuda
  echo "gpu_checks: no usable GPU here" >&2
  exit 2
fi
status=0
for t in cuda_compile gpu_check cuda_transfers cuda_dispatch cuda_parity geometry_gpu nn_golden; do
  if DNVS_REQUIRE_GPU=1 cargo test --release -q --test "$t" > "$OUT/test-$t.log" 2>&1; then
    echo "ok   test $t"
  else
    echo "FAIL test $t (see $OUT/test-$t.log)"
    status=1
  fi
done
for p in f32 bf16; do
  "$BIN" info --check-gpu --precision "$p" > "$OUT/check-$p.log" 2>&1
  if grep -q "self-check: passed" "$OUT/check-$p.log"; then
    echo "ok   self-check $p"
  else
    echo "FAIL self-check $p (see $OUT/check-$p.log)"
    status=1
  fi
done
"$BIN" bench --device cuda --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
grep "ms/step" "$OUT/bench.log"
"$BIN" bench --device cuda --no-kernels --profile --reps 3 --json "$OUT/profile.json" \
  > "$OUT/profile.log" 2>&1
grep -A1 "profiled ops" "$OUT/profile.log"
if python3 -c "import torch" 2>/dev/null; then
  for p in fp32 tf32 bf16; do
    python3 benches/compare_pytorch.py --what step --device cuda --patch 112,144,64 \
      --precision "$p" --reps 10
  done | tee "$OUT/pytorch.jsonl"
fi
echo "gpu_checks: logs in $OUT; status $status"
exit $status
