#!/usr/bin/env bash
# One command: set up libtorch and the PyTorch reference if needed, then run
# the whole test suite against the default libtorch (2.13): format check,
# clippy, every test and doc test, the README walk among them.
#   scripts/test.sh                 the default libtorch
#   scripts/test.sh --all-libtorch  and then the libtorch 2.11 build's tests
#                                   (a second venv, 4.7 GB; what .ci/run runs)
#   scripts/test.sh FILTER...       only tests whose names hold FILTER
# It ends with one line, `tests: N passed, N failed, N skipped`, where a
# test that skipped at run time (CUDA without a GPU, ...) counts as skipped.
set -euo pipefail
all_libtorch=0
if [[ "${1:-}" == "--all-libtorch" ]]; then
  all_libtorch=1
  shift
fi
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ce_root"
# C/C++ through ccache (Debian's compiler links in /usr/lib/ccache): the
# README walk's LIBTORCH= build compiles torch-sys's 800 kB C++ wrapper and
# csrc/ again with the same command lines, minutes of a clean clone's run
# without it. Installed here where apt can (as root), as .ci/run does;
# where it cannot, the run is only slower.
if [[ ! -d /usr/lib/ccache && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "test: installing ccache (the README walk's second build reuses the first's C++)" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ccache \
    || { timeout 300 apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends ccache; }; } >/dev/null 2>&1 \
    || echo "test: could not install ccache; going on without it" >&2
fi
# On the PATH, not in CXX: cargo reruns a build script when CXX changes,
# and the walk's commands run in a user's shell without this script's
# variables (the PATH is kept).
if [[ -d /usr/lib/ccache && ":$PATH:" != *:/usr/lib/ccache:* ]]; then
  export PATH="/usr/lib/ccache:$PATH"
fi
# The tests' Python (CE_PYTHON, see tests/common) through a fork server
# that imports torch once (scripts/pyfork-server.py): each PyTorch
# reference then starts in milliseconds, not 2 s of CPU. Not where the
# caller chose a Python (CE_PYTHON) or CE_PYFORK=0. The README walk runs
# the pages' own `.venv/bin/python` commands as written, without it.
pyfork_python="$ce_root/$ce_venv/bin/python"
if [[ -z "${CE_PYTHON:-}" && "${CE_PYFORK:-1}" != 0 && -x "$pyfork_python" ]]; then
  export CE_PYFORK_PYTHON="$pyfork_python"
  CE_PYFORK_SOCKET="$(mktemp -u "${TMPDIR:-/tmp}/ce-pyfork-XXXXXX.sock")"
  export CE_PYFORK_SOCKET
  "$pyfork_python" "$ce_root/scripts/pyfork-server.py" "$CE_PYFORK_SOCKET" &
  pyfork_pid=$!
  trap 'kill "$pyfork_pid" 2>/dev/null; rm -f "$CE_PYFORK_SOCKET"' EXIT
  export CE_PYTHON="$ce_root/scripts/pyfork-python"
fi
if [[ "$ce_manifest" != "$ce_root/Cargo.toml" ]]; then
  # Another libtorch release (CE_LIBTORCH, see setup.sh): the same sources
  # built against it, and the tests that compare with that release's
  # PyTorch and drive the binary (the rest is the same code as the default
  # build's, which the full run covers). More with ARGS, e.g.
  # `CE_LIBTORCH=2.11 scripts/test.sh --test train --test examples`.
  echo "== cargo test --release for libtorch $ce_torch (tch $ce_tch)" >&2
  cargo test --release --manifest-path "$ce_manifest" \
    --test parity --test cli --test rng --test link "$@"
  exit
fi
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
# Release mode, like the tests below: the build scripts (torch-sys's C++
# wrapper, csrc/, jemalloc) then run once for both instead of once per
# profile, minutes of a cold CI run. The lints are the same.
echo "== cargo clippy --release --all-targets -- -D warnings" >&2
cargo clippy --release --all-targets -- -D warnings

# Each skip is written here by tests/common's skip(), TEST<TAB>REASON.
export CE_SKIP_LOG="$ce_root/target/skipped.log"
rm -f "$CE_SKIP_LOG"
log="$ce_root/target/test-output.log"
# In release mode: the README walk (tests/readme.rs) runs `cargo run
# --release` through the README's commands, and this way the tests and those
# commands share one build instead of two. cargo-nextest, where it is
# installed, runs the tests of all 23 test binaries side by side (cargo test
# runs one binary after another, and most of them spend their time waiting
# on one process: a Python reference, the binary, a build), each test in
# its own process; doc tests are cargo test's alone.
status=0
results="$ce_root/target/test-results.log" # cargo test's "test result:" lines
: >"$results"
passed=0 failed=0
if command -v cargo-nextest >/dev/null 2>&1; then
  echo "== cargo nextest run --release (and cargo test --release --doc)" >&2
  # Its own log, kept: each test's time is in it (`PASS [ 12.3s]`).
  nextest_log="$ce_root/target/nextest-output.log"
  cargo nextest run --release --no-fail-fast --no-tests=warn "$@" 2>&1 | tee "$nextest_log" || status=1
  passed=$(sed -n 's/.* tests\? run: \([0-9]*\) passed.*/\1/p' "$nextest_log" | tail -1)
  failed=$(sed -n 's/.* tests\? run: .* \([0-9]*\) failed.*/\1/p' "$nextest_log" | tail -1)
  if [[ $# -eq 0 ]]; then
    cargo test --release --doc 2>&1 | tee "$log" || status=1
    grep '^test result:' "$log" >>"$results" || true
  fi
else
  echo "== cargo test --release (cargo-nextest not found)" >&2
  cargo test --release --no-fail-fast "$@" 2>&1 | tee "$log" || status=1
  grep '^test result:' "$log" >>"$results" || true
fi
# And the build for the other supported libtorch release (2.11, tch 0.24:
# scripts/setup.sh's table), so that it cannot rot: its parity, CLI,
# generator and link tests against PyTorch 2.11.
if ((all_libtorch)) && [[ $# -eq 0 && -z "${CE_LIBTORCH:-}" && -z "${LIBTORCH:-}" ]]; then
  # Its own fork server, for its own venv's torch.
  CE_LIBTORCH=2.11 env -u CE_PYTHON -u CE_PYFORK_SOCKET -u CE_PYFORK_PYTHON \
    bash "$ce_root/scripts/test.sh" 2>&1 | tee "$log" || status=1
  grep '^test result:' "$log" >>"$results" || true
fi
while read -r p f; do
  passed=$((${passed:-0} + p)) failed=$((${failed:-0} + f))
done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$results")
skipped=0
if [[ -s "$CE_SKIP_LOG" ]]; then
  skipped=$(cut -f1 "$CE_SKIP_LOG" | sort -u | wc -l)
  echo "== skipped at run time:" >&2
  sort -u "$CE_SKIP_LOG" | sed 's/^/   /' >&2
fi
passed=$((${passed:-0} - skipped))
failed=${failed:-0}
((failed == 0)) || status=1
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
