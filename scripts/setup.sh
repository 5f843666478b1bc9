#!/usr/bin/env bash
# Sets up libtorch for the build, idempotently, and prints where it is.
#
# - LIBTORCH set (a libtorch the user unzipped): use it, do nothing else.
# - otherwise: a project-local venv at .venv/ with torch==$TORCH_VERSION from
#   PyPI (its wheel carries libtorch for CPU and CUDA), installed only when the
#   right version is not already there. The same venv's Python `torch` is the
#   reference implementation the parity tests run.
#
# CE_LIBTORCH picks the libtorch release (default 2.13): each release's
# torch wheel, venv and tch crate are pinned here and only here (see
# build-notes.md). 2.13 is Cargo.toml's own tch; for another, scripts/env.sh
# builds a copy of the crate whose Cargo.toml pins that release's tch.
set -euo pipefail

# CE_LIBTORCH  torch wheel  venv        tch crate
#   2.13       2.13.0       .venv       0.26.0
#   2.11       2.11.0       .venv-2.11  0.24.0
case "${CE_LIBTORCH:-2.13}" in
  2.13) TORCH_VERSION="2.13.0" VENV_NAME=".venv" TCH_VERSION="0.26.0" ;;
  2.11) TORCH_VERSION="2.11.0" VENV_NAME=".venv-2.11" TCH_VERSION="0.24.0" ;;
  *) echo "setup: CE_LIBTORCH=$CE_LIBTORCH is not a supported libtorch release (2.13 or 2.11)" >&2; exit 1 ;;
esac
# scripts/env.sh asks for the pins: `setup.sh --pins` prints them and stops.
if [[ "${1:-}" == "--pins" ]]; then
  echo "$TORCH_VERSION $VENV_NAME $TCH_VERSION"
  exit 0
fi
# Python packages the tests need beside torch (checkpoints PyTorch can read).
EXTRA_PACKAGES=(safetensors numpy)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/$VENV_NAME"

die() { echo "setup: $*" >&2; exit 1; }

# gloo's headers, for csrc/gloo.cpp (the torch wheel has none; every gloo
# symbol is libtorch's, see build-notes.md): Debian's libgloo-dev, installed
# here where apt can (as root), or GLOO_INCLUDE pointing at a dir with gloo/.
gloo_include="${GLOO_INCLUDE:-/usr/include}"
if [[ ! -f "$gloo_include/gloo/context.h" ]]; then
  if [[ -z "${GLOO_INCLUDE:-}" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing libgloo-dev (gloo's headers, for c10d's gloo backend)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libgloo-dev >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libgloo-dev >/dev/null 2>&1; } \
      || die "could not install libgloo-dev with apt-get (gloo's headers); install it, or set GLOO_INCLUDE to a directory holding gloo/"
  else
    die "gloo's headers are missing ($gloo_include/gloo/context.h): apt-get install libgloo-dev, or set GLOO_INCLUDE to a directory holding gloo/"
  fi
fi

if [[ -n "${LIBTORCH:-}" ]]; then
  [[ -d "$LIBTORCH/lib" ]] || die "LIBTORCH=$LIBTORCH has no lib/ directory; unset it to use the venv, or point it at an unzipped libtorch"
  echo "libtorch: $LIBTORCH (from LIBTORCH; nothing installed)"
  exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || die "Python 3 not found ($python); install python3 (with venv and pip) or set LIBTORCH to an unzipped libtorch"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "$("$python" --version 2>&1) is too old; torch $TORCH_VERSION needs Python >= 3.10"

vpy="$venv/bin/python"
# The fast path: a venv this script checked in full (torch imported) leaves
# a stamp with the version and torch's dir; while that version's and the
# extras' package metadata and libtorch are still there, nothing is asked
# of Python again (the full check imports torch: 2 s for every run.sh).
stamp="$venv/.ce-setup-ok"
installed() { compgen -G "$venv/lib/python3*/site-packages/$1-$2*.dist-info" >/dev/null; }
# The CUDA release the wheel pins (its cuda-toolkit==X requirement; none
# for a wheel without CUDA): csrc/nccl.cpp needs that release's nvidia-cuda-crt
# and nvidia-cuda-cccl headers beside the wheel's nccl.h (build.rs;
# build-notes.md, "NCCL"), cuda-toolkit's crt and cccl extras, 3 MB.
cuda_pin() {
  sed -n 's/^Requires-Dist: cuda-toolkit\[.*\]==\([0-9.]*\).*/\1/p' \
    "$venv"/lib/python3*/site-packages/torch-"$TORCH_VERSION"*.dist-info/METADATA 2>/dev/null | head -1
}
cuda_headers_missing() {
  [[ -n "$(cuda_pin)" ]] && ! { installed nvidia_cuda_crt "" && installed nvidia_cuda_cccl ""; }
}
if [[ -f "$stamp" ]] && read -r stamp_version torch_dir <"$stamp" \
  && [[ "$stamp_version" == "$TORCH_VERSION" && -f "$torch_dir/lib/libtorch_cpu.so" ]] \
  && installed torch "$TORCH_VERSION"; then
  fresh=1
  for pkg in "${EXTRA_PACKAGES[@]}"; do installed "$pkg" "" || fresh=0; done
  cuda_headers_missing && fresh=0
  if ((fresh)); then
    echo "libtorch: $torch_dir"
    exit 0
  fi
fi
rm -f "$stamp"

installed_version() {
  "$vpy" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true
}

if [[ ! -x "$vpy" ]]; then
  echo "setup: creating $venv" >&2
  "$python" -m venv "$venv" 2>/dev/null || die "could not create a venv with $python -m venv (on Debian: apt-get install python3-venv)"
fi
"$vpy" -m pip --version >/dev/null 2>&1 || die "pip is missing in $venv (on Debian: apt-get install python3-pip python3-venv)"

have="$(installed_version)"
if [[ "$have" != "$TORCH_VERSION" && "$have" != "$TORCH_VERSION+"* ]]; then
  if [[ -n "$have" ]]; then
    die "found torch $have in $venv but tch $TCH_VERSION needs torch $TORCH_VERSION; remove $venv and run again"
  fi
  echo "setup: installing torch==$TORCH_VERSION into $venv (about 4.7 GB with its CUDA libraries)" >&2
  "$vpy" -m pip install --disable-pip-version-check -q "torch==$TORCH_VERSION" "${EXTRA_PACKAGES[@]}" >&2 \
    || die "pip install torch==$TORCH_VERSION failed (see above)"
  have="$(installed_version)"
  [[ "$have" == "$TORCH_VERSION"* ]] || die "torch $TORCH_VERSION did not install (found '${have:-nothing}')"
fi
for pkg in "${EXTRA_PACKAGES[@]}"; do
  "$vpy" -c "import $pkg" 2>/dev/null || "$vpy" -m pip install --disable-pip-version-check -q "$pkg" >&2 \
    || die "pip install $pkg failed"
done

if cuda_headers_missing; then
  "$vpy" -m pip install --disable-pip-version-check -q "cuda-toolkit[crt,cccl]==$(cuda_pin)" >&2 \
    || die "pip install cuda-toolkit[crt,cccl]==$(cuda_pin) failed (the CUDA headers of NCCL's backend)"
fi

torch_dir="$("$vpy" -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
  || die "torch in $venv does not import"
echo "$TORCH_VERSION $torch_dir" >"$stamp"
echo "libtorch: $torch_dir"
