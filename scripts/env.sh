# Sourced by run.sh and test.sh: runs setup.sh (idempotent) and points cargo
# at the libtorch it found, either $LIBTORCH or the venv's torch wheel.
#
# CE_LIBTORCH=2.11 (see setup.sh's table) builds for another libtorch
# release: a copy of the crate in target/libtorch-2.11/ whose sources,
# tests and scripts are links to this tree and whose Cargo.toml is this
# one with that release's tch pinned (Cargo cannot pick between two tch
# crates by feature: both link the native library `tch`). Its `.venv` is
# that release's venv. $ce_manifest is the manifest to build.
ce_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ce_root/scripts/setup.sh" >&2 || return 1 2>/dev/null || exit 1
read -r ce_torch ce_venv ce_tch < <(bash "$ce_root/scripts/setup.sh" --pins)
ce_manifest="$ce_root/Cargo.toml"
ce_build_root="$ce_root"
if [[ "$ce_tch" != "$(sed -n 's/^tch = "=\(.*\)"$/\1/p' "$ce_root/Cargo.toml")" ]]; then
  ce_build_root="$ce_root/target/libtorch-${CE_LIBTORCH}"
  mkdir -p "$ce_build_root"
  for entry in build.rs csrc src tests examples benches data docs scripts fuzz README.md; do
    ln -sfn "$ce_root/$entry" "$ce_build_root/$entry"
  done
  ln -sfn "$ce_root/$ce_venv" "$ce_build_root/.venv"
  ln -sfn "$ce_root/$ce_venv" "$ce_build_root/$ce_venv"
  sed -e "s/^tch = \"=.*\"$/tch = \"=$ce_tch\"/" \
      -e "s/^torch-sys = \"=.*\"$/torch-sys = \"=$ce_tch\"/" \
      "$ce_root/Cargo.toml" > "$ce_build_root/Cargo.toml.new"
  cmp -s "$ce_build_root/Cargo.toml.new" "$ce_build_root/Cargo.toml" 2>/dev/null \
    && rm "$ce_build_root/Cargo.toml.new" \
    || mv "$ce_build_root/Cargo.toml.new" "$ce_build_root/Cargo.toml"
  [[ -f "$ce_build_root/Cargo.lock" ]] || cp "$ce_root/Cargo.lock" "$ce_build_root/Cargo.lock"
  bash "$ce_root/scripts/seed-target.sh" "$ce_build_root/target" || return 1 2>/dev/null || exit 1
  ce_manifest="$ce_build_root/Cargo.toml"
fi
if [[ -z "${LIBTORCH:-}" ]]; then
  # torch-sys asks `python` (the venv's, since VIRTUAL_ENV is set) for the
  # torch version (it must be the pinned one), the C++ ABI and the
  # lib/include dirs.
  export VIRTUAL_ENV="$ce_root/$ce_venv"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
  export LIBTORCH_USE_PYTORCH=1
fi
