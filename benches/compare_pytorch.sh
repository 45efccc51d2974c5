#!/usr/bin/env bash
# Side-by-side CPU timings of dnvs-engine and PyTorch (oneDNN) on the paper's V-Net (width 16),
# 2 threads each, interleaved engine / PyTorch per case and round so that load from other jobs
# hits both sides alike. Prints one line per run (with the 1-minute load average before it) and
# a summary of medians over the rounds with the ratio PyTorch ms / engine ms (> 1: engine faster).
#
#   pip install torch monai               # plain PyPI
#   benches/compare_pytorch.sh            # all cases, 3 rounds
#   ROUNDS=5 CASES="step:32,32,32 forward:64,64,32" benches/compare_pytorch.sh
#
# Cases are WHAT:PATCH with WHAT one of step, forward, window (window = sliding window over a
# VOLUME, default 120x150x70, with PATCH as window). PYTHON picks the interpreter that has torch.
# OpenMP threads wait passively by default (OMP_WAIT_POLICY=PASSIVE): on a machine shared with
# other jobs PyTorch's spinning OpenMP barriers made its step 2.5x slower (27 s vs 10 s at 32^3,
# load 11 on 2 cores); on an idle machine set OMP_WAIT_POLICY=ACTIVE to give PyTorch its best case.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ROUNDS=${ROUNDS:-3}
REPS=${REPS:-5}
THREADS=${THREADS:-2}
CASES=${CASES:-"step:32,32,32 step:64,64,32 forward:64,64,32 window:64,64,32"}
VOLUME=${VOLUME:-120,150,70}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
BIN=target/release/dnvs-engine
cargo build --release --quiet
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

engine() { # what patch -> ms
  local what=$1 patch=$2 json
  json=$(mktemp)
  case $what in
    step) "$BIN" bench --device cpu --no-kernels --patch "$patch" --reps "$REPS" --json "$json" >/dev/null
          "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vnet_train_step"][0]["ms"])' "$json" ;;
    forward) "$BIN" bench --device cpu --no-kernels --no-step --forward --patch "$patch" --reps "$REPS" --json "$json" >/dev/null
          "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vnet_forward"]["ms"])' "$json" ;;
    window) "$BIN" bench --device cpu --no-kernels --no-step --window-over $VOLUME --patch "$patch" --reps "$REPS" --json "$json" >/dev/null
          "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vnet_sliding_window"]["ms"])' "$json" ;;
  esac
  rm -f "$json"
}

torch_side() { # what patch -> ms
  local reps=$REPS
  [ "$1" = window ] && reps=$(( REPS < 3 ? REPS : 3 ))
  "$PYTHON" benches/compare_pytorch.py --what "$1" --patch "$2" --volume $VOLUME \
    --threads "$THREADS" --reps "$reps" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["ms"])'
}

echo "date $(date -u +%FT%TZ), $(nproc) cores, $THREADS threads per side, $ROUNDS rounds, median of $REPS reps per run, OMP_WAIT_POLICY=$OMP_WAIT_POLICY, window volume $VOLUME"
for r in $(seq 1 "$ROUNDS"); do
  for c in $CASES; do
    what=${c%%:*}; patch=${c#*:}
    for side in engine pytorch; do
      load=$(cut -d' ' -f1 /proc/loadavg)
      if [ $side = engine ]; then ms=$(engine "$what" "$patch"); else ms=$(torch_side "$what" "$patch"); fi
      printf 'round %s %-8s %-10s %-8s %10.1f ms  load %s\n' "$r" "$what" "$patch" "$side" "$ms" "$load" | tee -a "$LOG"
    done
  done
done
echo "summary (median over rounds; ratio = PyTorch / engine, > 1 means the engine is faster):"
"$PYTHON" - "$LOG" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
loads = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    runs[(f[2], f[3], f[4])].append(float(f[5]))
    loads[(f[2], f[3])].append(float(f[-1]))
for (what, patch) in dict.fromkeys((k[0], k[1]) for k in runs):
    e = statistics.median(runs[(what, patch, "engine")])
    t = statistics.median(runs[(what, patch, "pytorch")])
    l = loads[(what, patch)]
    print(f"{what:<8} {patch:<10} engine {e:9.1f} ms  pytorch {t:9.1f} ms  ratio {t / e:5.2f}"
          f"  load {min(l):.1f}-{max(l):.1f}")
PY
