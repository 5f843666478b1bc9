#!/usr/bin/env bash
# Fuzzes the CSV reader and the checkpoint readers (safetensors and .pt) with
# cargo fuzz (libFuzzer)
# for a bounded time each, then replays what it found through the regression
# test. Not part of CI (it installs cargo-fuzz and takes minutes).
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# A crash leaves its input in fuzz/artifacts/<target>/; copy it into
# fuzz/regressions/<target>/ so tests/fuzz_regressions.rs keeps it fixed.
set -euo pipefail
secs="${1:-60}"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ce_root"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# The fuzz binaries are not built by this crate's build.rs, so they have no
# rpath to libtorch: point the loader at it.
libdir="${LIBTORCH:+$LIBTORCH/lib}"
libdir="${libdir:-$(.venv/bin/python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cargo fuzz passes nightly flags; the machine's stable toolchain accepts them
# with RUSTC_BOOTSTRAP. No sanitizer: the code under test is safe Rust, and
# what we look for are panics.
export RUSTC_BOOTSTRAP=1
for target in csv_loader checkpoint_loader pt_loader; do
  mkdir -p "fuzz/corpus/$target"
  cp -n fuzz/regressions/"$target"/* "fuzz/corpus/$target/" 2>/dev/null || true
  echo "== fuzzing $target for ${secs}s" >&2
  (cd fuzz && cargo fuzz run --sanitizer none "$target" -- -max_total_time="$secs" -max_len=4096)
done
cargo test --test fuzz_regressions
