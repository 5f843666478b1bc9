#!/usr/bin/env python3
"""The driver of scripts/bench.sh: the example's step in Rust (tch: autograd and
manual backward; candle when built) and in PyTorch eager (scripts/reference.py
bench), on the same shapes, threads and step counts, interleaved, several
times each. Prints a table of medians and one `ratio pytorch/rust` line per
shape. Run it through scripts/bench.sh, which builds first.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The binary to time: this tree's release build, or $CE_BENCH_RUST (the
# GPU check runs a binary built elsewhere).
RUST = os.environ.get("CE_BENCH_RUST") or os.path.join(ROOT, "target", "release", "cross-entropy-tch")
CANDLE = os.path.join(ROOT, "target", "release", "candle-step")
REFERENCE = [sys.executable, os.path.join(ROOT, "scripts", "reference.py")]

# (name, batch, input, classes, steps, warmup)
SHAPES = [
    ("10x10->3", 10, 10, 3, 10000, 500),
    ("256x784->10", 256, 784, 10, 1000, 50),
    ("4096x1024->1000", 4096, 1024, 1000, 12, 2),
]
CUDA_SHAPES = SHAPES + [("65536x1024->1000", 65536, 1024, 1000, 20, 3)]


def f32_bits(v):
    """A float's f32 bit pattern: losses compare bit for bit on the CPU."""
    return struct.unpack("<I", struct.pack("<f", v))[0]


def measure(cmd, env=None):
    """Runs a command; returns (its JSON, wall seconds, its peak RSS in MB)."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=None if env is None else {**os.environ, **env})
    # Both pipes at once (stderr on a thread): reading one to its end first
    # would block on a child that fills the other. Not communicate(): it
    # reaps the child, whose rusage wait4 needs.
    err = []
    drain = threading.Thread(target=lambda: err.append(p.stderr.read()))
    drain.start()
    out = p.stdout.read()
    drain.join()
    err = err[0]
    _, status, usage = os.wait4(p.pid, 0)  # the child's own rusage
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{err.decode()}")
    return json.loads(out), wall, usage.ru_maxrss / 1024


def interleaved(impls, reps, env_of=lambda name: None):
    """Runs each of `impls` (name -> command) `reps` times, one after the
    other in turn; returns every run's (JSON, wall, RSS) by name, the median
    us/step by name, and the first run's final loss as f32 bits by name (the
    same on the CPU, where the runs are bit-equal)."""
    results = {k: [] for k in impls}
    for _ in range(reps):
        for k, cmd in impls.items():
            results[k].append(measure(cmd, env_of(k)))
    med = {k: statistics.median(r[0]["us_per_step"] for r in v) for k, v in results.items()}
    bits = {k: f32_bits(v[0][0]["final_loss"]) for k, v in results.items()}
    return results, med, bits


def shape_args(n, d, c, steps, warmup, threads, device):
    a = ["--batch-size", str(n), "--features", str(d), "--classes", str(c),
         "--steps", str(steps), "--warmup", str(warmup), "--device", device, "--json"]
    if threads:
        a += ["--threads", str(threads)]
    return a


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="1 rep, seed shape only")
    p.add_argument("--cuda-only", action="store_true",
                   help="the CUDA rows only (the GPU check), no CPU, optimizer or train rows")
    p.add_argument("--only", choices=["steps", "optimizers", "train", "ddp", "amp"],
                   help="one group of rows: the step at each shape, the optimizers, "
                        "mini-batch training, data-parallel training (DDP), or mixed "
                        "precision (autocast) against f32")
    args = p.parse_args()
    import torch

    default_threads = torch.get_num_threads()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.cuda_only:
        devices = devices[1:]
        if not devices:
            sys.exit("bench: --cuda-only, but torch sees no GPU")
    reps = 1 if args.quick else args.reps
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"default threads {default_threads}, {reps} runs each, interleaved; medians")
    rows, ratios = [], {}
    for device in (devices if args.only in (None, "steps") else []):
        shapes = SHAPES if device == "cpu" else CUDA_SHAPES
        if args.quick:
            shapes = shapes[:1]
        for name, n, d, c, steps, warmup in shapes:
            for threads in ([1, default_threads] if device == "cpu" else [None]):
                if device == "cpu" and threads == default_threads and default_threads == 1:
                    continue
                sa = shape_args(n, d, c, steps, warmup, threads, device)
                impls = {
                    "pytorch": REFERENCE + ["bench"] + sa,
                    "rust autograd": [RUST, "bench", "--backward", "autograd"] + sa,
                    "rust manual": [RUST, "bench", "--backward", "manual"] + sa,
                }
                if device == "cpu" and os.path.exists(CANDLE) and threads == 1:
                    impls["candle"] = [CANDLE, str(n), str(d), str(c), str(steps), str(warmup)]
                if n * d >= 4096 * 1024:
                    impls["gemms only"] = [RUST, "bench", "--gemm-only"] + sa
                # candle's CPU matmuls use their own thread pool.
                results, med, bits = interleaved(
                    impls, reps, lambda k: {"RAYON_NUM_THREADS": "1"} if k == "candle" else None)
                rss = {k: max(r[2] for r in v) for k, v in results.items()}
                exact = bits["rust autograd"] == bits["pytorch"] == bits["rust manual"]
                for k in impls:
                    if k == "pytorch":
                        continue
                    rows.append((f"{name} {device}", threads or "-", k, med["pytorch"], med[k],
                                 med["pytorch"] / med[k], rss["pytorch"], rss[k],
                                 "-" if not k.startswith("rust") or k == "gemms only"
                                 else "n/a" if device != "cpu" else "yes" if exact else "NO"))
                if threads in (1, None):
                    ratios[f"{name}{'' if device == 'cpu' else ' cuda'}"] = (
                        med["pytorch"] / med["rust manual"], med["pytorch"] / med["rust autograd"],
                        med["rust autograd"] / med.get("gemms only", float("nan")))
    header = ("shape", "threads", "rust impl", "pytorch us/step", "rust us/step", "ratio",
              "pytorch MB", "rust MB", "bit-equal")
    widths = [20, 7, 13, 15, 12, 7, 10, 8, 9]
    if rows:
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        cells = [r[0], str(r[1]), r[2], f"{r[3]:.1f}", f"{r[4]:.1f}", f"{r[5]:.2f}",
                 f"{r[6]:.0f}", f"{r[7]:.0f}", r[8]]
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    if args.only in (None, "amp"):
        amp_rows(reps, devices, args.quick)
    if not args.cuda_only:
        if args.only in (None, "optimizers"):
            optimizer_rows(reps)
        if args.only in (None, "train"):
            training_rows(reps, args.quick)
        if args.only in (None, "ddp"):
            ddp_rows(reps, args.quick)
        if args.only is None:
            timer_check()
    for name, (manual, autograd, gemm) in ratios.items():
        extra = f"; rust step / its GEMMs alone: {gemm:.2f}" if gemm == gemm else ""
        print(f"ratio pytorch/rust {name}: {manual:.2f} (manual backward; autograd: {autograd:.2f}{extra})")


# Dense bf16 (= fp16) tensor-core peak, TFLOP/s, from NVIDIA's data sheets,
# by the start of torch.cuda.get_device_name(); CE_BF16_PEAK_TFLOPS overrides.
BF16_PEAK_TFLOPS = [("NVIDIA H200", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100", 989.4),
                    ("NVIDIA A100", 312.0), ("NVIDIA L40S", 362.1), ("NVIDIA L4", 121.0)]


def bf16_peak(device_name):
    if os.environ.get("CE_BF16_PEAK_TFLOPS"):
        return float(os.environ["CE_BF16_PEAK_TFLOPS"])
    return next((peak for prefix, peak in BF16_PEAK_TFLOPS if device_name.startswith(prefix)), None)


def amp_rows(reps, devices, quick):
    """Mixed precision: the step under autocast (bf16; fp16 with its
    GradScaler) against the f32 step, ours and PyTorch's in the same run, at
    the two large shapes (the CPU: 4096x1024->1000 only, one thread and the
    default). On CUDA also the step's two GEMMs alone in bf16, and each as a
    share of the card's bf16 peak: a step is 4*n*d*c FLOPs in its two GEMMs
    (forward x W^T and the weight gradient; the input needs no gradient)."""
    import torch

    for device in devices:
        if device == "cpu":
            shapes = [("4096x1024->1000", 4096, 1024, 1000, 6, 1)]
            thread_counts = [1] if quick else [1, torch.get_num_threads()]
            dtypes = ["bf16"]  # fp16 autocast on the CPU is slow in PyTorch and here alike
            peak = None
        else:
            shapes = [("4096x1024->1000", 4096, 1024, 1000, 50, 5),
                      ("65536x1024->1000", 65536, 1024, 1000, 20, 3)]
            thread_counts = [None]
            dtypes = ["bf16", "fp16"]
            name = torch.cuda.get_device_name(0)
            peak = bf16_peak(name)
            print(f"amp on {name}: bf16 peak "
                  + (f"{peak:.1f} TFLOP/s" if peak else "unknown (set CE_BF16_PEAK_TFLOPS)"))
        for shape, n, d, c, steps, warmup in (shapes[:1] if quick else shapes):
            for threads in thread_counts:
                sa = shape_args(n, d, c, steps, warmup, threads, device)
                impls = {"pytorch f32": REFERENCE + ["bench"] + sa, "rust f32": [RUST, "bench"] + sa}
                for dt in dtypes:
                    impls[f"pytorch {dt}"] = REFERENCE + ["bench", "--amp", dt] + sa
                    impls[f"rust {dt}"] = [RUST, "bench", "--amp", dt] + sa
                if device != "cpu":
                    impls["gemms bf16"] = [RUST, "bench", "--gemm-only", "--amp", "bf16"] + sa
                _, med, bits = interleaved(impls, reps)
                flops = 4 * n * d * c
                where = f"{shape} {device}" + (f", {threads} thread(s)" if threads else "")
                print(f"amp at {where} (us/step; ratio = PyTorch's time / ours):")
                for k in impls:
                    line = f"  {k:12} {med[k]:12.1f}"
                    who, _, dt = k.partition(" ")
                    if who == "rust":
                        line += f"  ratio {med['pytorch ' + dt] / med[k]:.2f}"
                        if device == "cpu":
                            line += "  bit-equal " + ("yes" if bits[k] == bits["pytorch " + dt] else "NO")
                    if dt != "f32" and who != "gemms":
                        line += f"  {med[who + ' f32'] / med[k]:.2f}x the f32 step"
                    if peak:
                        line += f"  {flops / (med[k] * 1e-6) / (peak * 1e12):.1%} of bf16 peak"
                    print(line)


def optimizer_rows(reps):
    """The seed's step with Adam (this crate's exact port) against SGD, one
    thread, PyTorch in the same run."""
    n, d, c, steps, warmup = 10, 10, 3, 5000, 200
    sa = shape_args(n, d, c, steps, warmup, 1, "cpu")
    impls = {}
    for opt in ["sgd", "adam"]:
        impls[f"pytorch {opt}"] = REFERENCE + ["bench", "--optimizer", opt] + sa
        impls[f"rust {opt}"] = [RUST, "bench", "--optimizer", opt] + sa
        impls[f"rust {opt} manual"] = [RUST, "bench", "--backward", "manual", "--optimizer", opt] + sa
    _, med, bits = interleaved(impls, reps)
    print("optimizers at 10x10->3, 1 thread (us/step):")
    for opt in ["sgd", "adam"]:
        exact = bits[f"rust {opt}"] == bits[f"pytorch {opt}"] == bits[f"rust {opt} manual"]
        print(f"  {opt:5} pytorch {med[f'pytorch {opt}']:.1f}  rust autograd {med[f'rust {opt}']:.1f} "
              f"(ratio {med[f'pytorch {opt}'] / med[f'rust {opt}']:.2f})  rust manual "
              f"{med[f'rust {opt} manual']:.1f} (ratio {med[f'pytorch {opt}'] / med[f'rust {opt} manual']:.2f})"
              f"  bit-equal: {'yes' if exact else 'NO'}")
    print(f"ratio adam/sgd step: rust autograd {med['rust adam'] / med['rust sgd']:.2f}, "
          f"rust manual {med['rust adam manual'] / med['rust sgd manual']:.2f}, "
          f"pytorch {med['pytorch adam'] / med['pytorch sgd']:.2f}")


# (name, train flags): mini-batch training on digits, one thread.
TRAININGS = [
    ("sgd momentum", ["--momentum", "0.9"]),
    ("adam + cosine", ["--optimizer", "adam", "--lr", "0.01", "--scheduler", "cosine",
                       "--t-max", "20"]),
    ("mlp + dropout", ["--hidden", "64,32", "--dropout", "0.2"]),
]


def training_rows(reps, quick):
    """`train` against `reference.py train` with the same flags: digits,
    batch 32, 20 epochs, one thread; per epoch of the epoch loop (start-up
    excluded: the JSON's train_seconds)."""
    base = ["train", "--dataset", "digits", "--batch-size", "32", "--epochs", "20",
            "--threads", "1", "--device", "cpu", "--json", "--quiet"]
    print("mini-batch train, digits, batch 32, 20 epochs, 1 thread (ms/epoch):")
    for name, flags in (TRAININGS[:1] if quick else TRAININGS):
        runs = {"pytorch": [], "rust": []}
        for _ in range(reps):
            runs["pytorch"].append(measure(REFERENCE + base + flags)[0])
            runs["rust"].append(measure([RUST] + base + flags)[0])
        ms = {k: statistics.median(r["train_seconds"] for r in v) * 1000 / 20 for k, v in runs.items()}
        exact = f32_bits(runs["rust"][0]["final"]["train_loss"]) == f32_bits(runs["pytorch"][0]["final"]["train_loss"])
        print(f"  {name:14} pytorch {ms['pytorch']:.2f}  rust {ms['rust']:.2f}  "
              f"ratio {ms['pytorch'] / ms['rust']:.2f}  bit-equal: {'yes' if exact else 'NO'}")


def synthetic_csv(path, rows=16384, features=128, classes=10, seed=0):
    """A larger data set than the bundled ones, for the DDP rows: Gaussian
    features, labels from a fixed random linear map plus noise (learnable,
    not separable), written once per bench run."""
    import random
    rng = random.Random(seed)
    w = [[rng.gauss(0, 1) for _ in range(features)] for _ in range(classes)]
    with open(path, "w") as f:
        for _ in range(rows):
            x = [rng.gauss(0, 1) for _ in range(features)]
            scores = [sum(a * b for a, b in zip(wc, x)) + rng.gauss(0, 4) for wc in w]
            f.write(",".join(f"{v:.5f}" for v in x) + f",{scores.index(max(scores))}\n")


# (name, data flags, train flags, epochs): the DDP rows' jobs. Batch sizes
# are per rank, as DataLoader's batch_size is under DistributedSampler.
DDP_JOBS = [
    ("digits, sgd momentum, batch 32", ["--dataset", "digits"],
     ["--momentum", "0.9", "--batch-size", "32"], 20),
    ("synthetic 16384x128, mlp 512,512, adam, batch 256", None,
     ["--hidden", "512,512", "--optimizer", "adam", "--batch-size", "256"], 3),
]


def ddp_rows(reps, quick):
    """`train --nproc W` against PyTorch DDP under `torchrun --nproc-per-node
    W` (reference.py train), one thread per rank, W = 1 (no DDP: one plain
    process each) and 2, on digits and a larger synthetic set. Per epoch of
    rank 0's epoch loop (the JSON's train_seconds: start-up and rendezvous
    excluded) and whole-job wall time (launch, rendezvous, data, training)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="ce-bench-") as tmp:
        csv = os.path.join(tmp, "synthetic.csv")
        synthetic_csv(csv)
        ddp_jobs(reps, quick, csv)


def ddp_jobs(reps, quick, csv):
    """ddp_rows' runs, with the synthetic set at `csv`."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    print("data-parallel train, one thread per rank (ms/epoch of rank 0's loop; wall s of the job):")
    for name, data, flags, epochs in (DDP_JOBS[:1] if quick else DDP_JOBS):
        base = ["train"] + (data or ["--data", csv]) + flags + [
            "--epochs", str(epochs), "--threads", "1", "--device", "cpu", "--json", "--quiet"]
        env = {"OMP_NUM_THREADS": "1"}
        impls = {
            (1, "pytorch"): REFERENCE + base,
            (1, "rust"): [RUST] + base,
            (2, "pytorch"): [torchrun, "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                             "--rdzv-endpoint", "127.0.0.1:0"] + REFERENCE[1:] + base,
            (2, "rust"): [RUST] + base + ["--nproc", "2"],
        }
        runs = {k: [] for k in impls}
        for _ in range(reps):
            for k, cmd in impls.items():
                runs[k].append(measure(cmd, env))
        ms = {k: statistics.median(r[0]["train_seconds"] for r in v) * 1000 / epochs
              for k, v in runs.items()}
        wall = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
        loss = {k: f32_bits(v[0][0]["final"]["train_loss"]) for k, v in runs.items()}
        print(f"  {name}:")
        for w in (1, 2):
            exact = loss[(w, "rust")] == loss[(w, "pytorch")]
            label = "1 process " if w == 1 else "2 ranks   "
            print(f"    {label} pytorch {ms[(w, 'pytorch')]:.2f} ms ({wall[(w, 'pytorch')]:.2f} s)  "
                  f"rust {ms[(w, 'rust')]:.2f} ms ({wall[(w, 'rust')]:.2f} s)  "
                  f"ratio {ms[(w, 'pytorch')] / ms[(w, 'rust')]:.2f} (wall {wall[(w, 'pytorch')] / wall[(w, 'rust')]:.2f})"
                  f"  bit-equal: {'yes' if exact else 'NO'}")
        print(f"    scaling 1 -> 2 ranks (epoch time, 1 process / 2 ranks): pytorch "
              f"{ms[(1, 'pytorch')] / ms[(2, 'pytorch')]:.2f}, rust {ms[(1, 'rust')] / ms[(2, 'rust')]:.2f}")


def timer_check():
    """The in-process timer against whole-process time: runs of S and 4S
    steps differ by 3S steps of work and nothing else."""
    s = 20000
    base = [RUST, "bench", "--backward", "manual", "--threads", "1", "--device", "cpu",
            "--warmup", "100", "--json"]
    walls, inproc = [], []
    for steps in (s, 4 * s):
        r, wall, _ = measure(base + ["--steps", str(steps)])
        walls.append(wall)
        inproc.append(r["us_per_step"])
    whole = (walls[1] - walls[0]) * 1e6 / (3 * s)
    print(f"timer check (rust manual, 10x10->3, 1 thread): in-process {statistics.median(inproc):.2f} "
          f"us/step, whole-process {whole:.2f} us/step")


if __name__ == "__main__":
    main()
