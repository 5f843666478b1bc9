#!/usr/bin/env bash
# The benchmark: the example's step in Rust (tch, and candle unless --no-candle)
# against PyTorch eager, same shapes, threads and step counts, interleaved.
#   scripts/bench.sh [--no-candle] [--reps N] [--quick]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ce_root"
candle=1
args=()
for a in "$@"; do
  if [[ "$a" == "--no-candle" ]]; then candle=0; else args+=("$a"); fi
done
cargo build --release --quiet
if ((candle)); then
  cargo build --release --quiet --features candle --bin candle-step
else
  rm -f target/release/candle-step
fi
exec .venv/bin/python scripts/bench.py "${args[@]}"
