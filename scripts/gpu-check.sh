#!/usr/bin/env bash
# The GPU check, in two halves (issue: CUDA verified on a real GPU).
#
#   scripts/gpu-check.sh            here: build against libtorch 2.11 (the
#                                   GPU machine's torch), gather what the GPU
#                                   run needs in gpu-check/ (git-ignored, a
#                                   few MB), print the device command
#   scripts/gpu-check.sh --device   there (the device tool runs it in a copy
#                                   of this tree with gpu-check/ carried):
#                                   everything below, under 5 minutes, into
#                                   $OUT/report.txt
#
# There: nvidia-smi; the example on cuda against cpu (same starting
# numbers, loss and update within 1e-5); the CUDA tests; train on digits on
# cuda; train on cuda against PyTorch's train on the same card in f32,
# bf16 and fp16 (scripts/reference.py, largest difference and whether
# bit-equal); the cuda:N out-of-range message; bench's CUDA rows (PyTorch 2.11
# on the same GPU, in the same run, against Rust: the seed's shape,
# 256x784->10, 4096x1024->1000, 65536x1024->1000, and a GEMM-only row;
# and the amp rows: bf16 and fp16 autocast against f32, ours and PyTorch's,
# at the last two shapes, with the share of the card's bf16 peak).
# Our binaries have an rpath to this machine's libtorch; there,
# LD_LIBRARY_PATH (searched first: the rpath is a RUNPATH) points them at
# the same release's libtorch of that machine's torch.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
kit="gpu-check"

if [[ "${1:-}" != "--device" ]]; then
  set -e
  export CE_LIBTORCH=2.11
  source scripts/env.sh
  echo "gpu-check: building against libtorch $ce_torch (tch $ce_tch)" >&2
  cargo build --release --quiet --manifest-path "$ce_manifest"
  tests="$(cargo test --release --manifest-path "$ce_manifest" --test cuda --no-run \
    --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')"
  [[ -x "$tests" ]] || { echo "gpu-check: the CUDA test binary was not built" >&2; exit 1; }
  rm -rf "$kit" && mkdir -p "$kit"
  cp "$ce_build_root/target/release/cross-entropy-tch" "$kit/cross-entropy-tch"
  cp "$tests" "$kit/cuda-tests"
  echo "$ce_torch" > "$kit/libtorch-version"
  size=$(du -sm "$kit" | cut -f1)
  ((size < 64)) || { echo "gpu-check: $kit is ${size} MiB, over the 64 MiB that travel" >&2; exit 1; }
  echo "gpu-check: $kit/ ready (${size} MiB). On the device tool:"
  echo "  run(command=\"bash scripts/gpu-check.sh --device\", carry=[\"$kit\"], timeout_s=420)"
  echo "then give_back. The report comes back as \$OUT/report.txt."
  exit 0
fi

# ---- the device half
out="${OUT:-$kit/out}"
mkdir -p "$out"
report="$out/report.txt"
: > "$report"
say() { echo "$*" | tee -a "$report"; }
section() { say ""; say "== $*"; }
py="${CE_PYTHON:-python3}"
bin="$kit/cross-entropy-tch"
fail=0
check() { # check WHAT COMMAND...: runs it, logs its output and whether it passed
  local what="$1"; shift
  local log="$out/$(echo "$what" | tr ' /:' '___').log"
  if "$@" > "$log" 2>&1; then say "PASS $what"; else say "FAIL $what (see $(basename "$log"))"; fail=1; fi
  tail -n 40 "$log" >> "$report"
}

section "machine"
nvidia-smi >> "$report" 2>&1 || say "nvidia-smi: not available"
torch_version="$("$py" -c 'import torch; print(torch.__version__)' 2>&1)"
say "python torch: $torch_version; our build: libtorch $(cat "$kit/libtorch-version" 2>/dev/null)"
torch_lib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
gpu="$("$py" -c 'import torch; print(int(torch.cuda.is_available()))')"
[[ "$gpu" == 1 ]] || say "torch sees no GPU here: the CUDA steps below fail or skip"

section "the example: cuda against cpu"
check "example cuda vs cpu" "$py" - "$bin" <<'PY'
import json, subprocess, sys
bin = sys.argv[1]
run = lambda d: json.loads(subprocess.run([bin, "--json", "--device", d, "--seed", "3", "--steps", "4"],
                                          check=True, capture_output=True).stdout)
cpu, gpu = run("cpu"), run("cuda")
def flat(v):
    return [x for r in v for x in (r if isinstance(r, list) else [r])] if isinstance(v, list) else [v]
worst = 0.0
for key in ["initial", "inputs", "targets"]:
    assert cpu[key] == gpu[key], f"{key} differs: the starting numbers must be the CPU's"
for key, sub in [("outputs", None), ("losses", None), ("grad", "weight"), ("grad", "bias"),
                 ("final", "weight"), ("final", "bias")]:
    a = flat(cpu[key][sub] if sub else cpu[key]); b = flat(gpu[key][sub] if sub else gpu[key])
    assert len(a) == len(b) and a, f"{key}.{sub}: {len(a)} against {len(b)} numbers"
    d = max(abs(x - y) for x, y in zip(a, b)); worst = max(worst, d)
    assert d <= 1e-5, f"{key}.{sub} differs by {d:e}"
print(f"starting numbers equal; largest difference after 4 steps {worst:.3e} (bound 1e-5)")
PY

section "the CUDA tests"
export CE_BIN="$PWD/$bin" # tests/common bin(): the kit's binary
check "cuda tests" "$kit/cuda-tests" --test-threads 1

section "train on digits, cuda against cpu"
check "train digits cuda" "$py" - "$bin" <<'PY'
import json, subprocess, sys
bin = sys.argv[1]
args = ["train", "--dataset", "digits", "--epochs", "50", "--batch-size", "64", "--json", "--quiet"]
run = lambda d: json.loads(subprocess.run([bin, *args, "--device", d], check=True,
                                          capture_output=True).stdout)
cpu, gpu = run("cpu"), run("cuda")
assert gpu["device"].startswith("cuda"), gpu["device"]
a, b = cpu["final"], gpu["final"]
print(f"cpu: test acc {a['test_accuracy']:.4f} loss {a['test_loss']:.6f}; "
      f"cuda: test acc {b['test_accuracy']:.4f} loss {b['test_loss']:.6f}; "
      f"cuda {gpu['samples_per_second']:.0f} samples/s, cpu {cpu['samples_per_second']:.0f}")
assert abs(a["test_loss"] - b["test_loss"]) <= 1e-3, "the runs drifted apart"
PY

section "train on cuda against PyTorch on the same card (f32, bf16, fp16)"
# The same libtorch release on both sides, so the same kernels: the goal is
# bit-equal; each row prints the largest difference of any epoch's losses.
check "train cuda vs pytorch cuda" "$py" - "$bin" <<'PY'
import json, struct, subprocess, sys
bin = sys.argv[1]
base = ["train", "--dataset", "digits", "--epochs", "10", "--batch-size", "64", "--json",
        "--quiet", "--device", "cuda", "--hidden", "64", "--optimizer", "adam", "--lr", "0.01"]
bits = lambda v: struct.unpack("<I", struct.pack("<f", v))[0]
worst_all, unequal = 0.0, []
for amp in [[], ["--amp", "bf16"], ["--amp", "fp16"]]:
    args = base + amp
    ours = json.loads(subprocess.run([bin, *args], check=True, capture_output=True).stdout)
    theirs = json.loads(subprocess.run([sys.executable, "scripts/reference.py", *args],
                                       check=True, capture_output=True).stdout)
    pairs = [(a[k], b[k]) for a, b in zip(ours["epochs"], theirs["epochs"])
             for k in ("train_loss", "test_loss")]
    worst = max(abs(x - y) for x, y in pairs)
    equal = all(bits(x) == bits(y) for x, y in pairs)
    name = " ".join(amp) or "f32"
    print(f"{name}: largest loss difference {worst:.3e}, bit-equal: {equal}, "
          f"skipped steps {ours.get('skipped_steps')} / {theirs.get('skipped_steps')}")
    worst_all = max(worst_all, worst)
    if not equal:
        unequal.append(name)
print("not bit-equal: " + (", ".join(unequal) or "none"))
assert worst_all <= 1e-3, "the runs drifted apart"
PY

section "the default --device auto on a GPU machine"
check "auto says cuda:0" bash -c "out=\$('$bin' 2>&1); code=\$?; echo \"\$out\"; [[ \$code == 0 ]] && echo \"\$out\" | grep -q 'on cuda:0'"

section "cuda:N out of range"
check "cuda:7 refused" bash -c "out=\$('$bin' --device cuda:7 2>&1); code=\$?; echo \"\$out\"; [[ \$code == 2 && \$(echo \"\$out\" | wc -l) == 1 ]]"

section "bench: CUDA rows, PyTorch $torch_version in the same run"
check "bench cuda" env CE_BENCH_RUST="$bin" "$py" scripts/bench.py --cuda-only --reps 2

section "result"
if ((fail)); then say "some checks FAILED"; else say "all checks passed"; fi
exit "$fail"
