#!/usr/bin/env bash
# One command: set up libtorch if needed, build, and run the example.
#   scripts/run.sh [ARGS...]   (e.g. scripts/run.sh --json --seed 3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ce_root"
if [[ ! -x "$ce_build_root/target/release/cross-entropy-tch" ]]; then
  echo "run: building in release mode (the first build takes a few minutes)" >&2
fi
exec cargo run --release --quiet --manifest-path "$ce_manifest" -- "$@"
