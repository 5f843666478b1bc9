# Sourced by run.sh and test.sh: runs setup.sh (idempotent) and points cargo
# at the libtorch it found, either $LIBTORCH or the venv's torch wheel.
ce_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ce_root/scripts/setup.sh" >&2 || return 1 2>/dev/null || exit 1
if [[ -z "${LIBTORCH:-}" ]]; then
  # torch-sys asks `python` (the venv's, since VIRTUAL_ENV is set) for the
  # torch version (it must be 2.13.0), the C++ ABI and the lib/include dirs.
  export VIRTUAL_ENV="$ce_root/.venv"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
  export LIBTORCH_USE_PYTORCH=1
fi
