#!/usr/bin/env bash
# One command: set up libtorch and the PyTorch reference if needed, then run
# the whole test suite (format check, clippy, every test and doc test,
# the README walk among them), then the libtorch 2.11 build's tests.
#   scripts/test.sh [cargo test ARGS...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ce_root"
if [[ "$ce_manifest" != "$ce_root/Cargo.toml" ]]; then
  # Another libtorch release (CE_LIBTORCH, see setup.sh): the same sources
  # built against it, and the tests that compare with that release's
  # PyTorch and drive the binary (the rest is the same code as the default
  # build's, which the full run covers). More with ARGS, e.g.
  # `CE_LIBTORCH=2.11 scripts/test.sh --test train --test examples`.
  echo "== cargo test --release for libtorch $ce_torch (tch $ce_tch)" >&2
  exec cargo test --release --manifest-path "$ce_manifest" \
    --test parity --test cli --test rng --test link "$@"
fi
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
# Release mode, like the tests below: the build scripts (torch-sys's C++
# wrapper, csrc/, jemalloc) then run once for both instead of once per
# profile, minutes of a cold CI run. The lints are the same.
echo "== cargo clippy --release --all-targets -- -D warnings" >&2
cargo clippy --release --all-targets -- -D warnings
# In release mode: the README walk (tests/readme.rs) runs `cargo run
# --release` through the README's commands, and this way the tests and those
# commands share one build instead of two.
echo "== cargo test --release" >&2
cargo test --release "$@"
# And the build for the other supported libtorch release (2.11, tch 0.24:
# scripts/setup.sh's table), so that it cannot rot: its parity, CLI,
# generator and link tests against PyTorch 2.11 (a second venv, 4.7 GB).
if [[ $# -eq 0 && -z "${CE_LIBTORCH:-}" && -z "${LIBTORCH:-}" ]]; then
  CE_LIBTORCH=2.11 bash "$ce_root/scripts/test.sh"
fi
