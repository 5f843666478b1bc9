# Starts a second cargo target dir (another libtorch's build, the README
# walk's LIBTORCH= block) from target/release's compiled dependencies, the
# first time only: cargo then rebuilds just what the other torch-sys
# configuration touches (torch-sys, tch and this crate, about 1.5 minutes)
# instead of every dependency (about 3.5). A copy, not hard links: rebuilt
# files must not change target/release's.
#
#   bash scripts/seed-target.sh TARGET_DIR
set -euo pipefail
release="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release"
dest="$1/release"
if [[ -d "$dest" || ! -d "$release/deps" ]]; then
  exit 0
fi
mkdir -p "$dest"
cp -a "$release/deps" "$release/build" "$release/.fingerprint" "$dest/"
