#!/usr/bin/env python3
"""The PyTorch reference: the seed example as written, with the same flags as
the Rust binary. `--json` writes the same JSON document as
`cross-entropy-tch --json`, which is what the parity tests compare, bit for bit.

    .venv/bin/python scripts/reference.py [--seed 0] [--json] ...
    .venv/bin/python scripts/reference.py train --dataset iris [--json] ...
    .venv/bin/python scripts/reference.py eval --load model.safetensors --dataset iris

`train` and `eval` do what `cross-entropy-tch train` and `eval` do, in the
same order (seed, split, standardize, model, SGD; per epoch: shuffle, steps,
evaluation), so their per-epoch numbers are the same.
"""
import argparse
import gzip
import json
import math
import os
import sys

import torch
import torch.nn as nn


class MyModel(nn.Module):
    def __init__(self, input_size, output_size):
        super(MyModel, self).__init__()
        self.linear = nn.Linear(input_size, output_size)

    def forward(self, x):
        return self.linear(x)


def seed_setup(args):
    """The seed's first five lines, with its constants as flags."""
    model = MyModel(args.input_size, args.num_classes)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

    inputs = torch.randn(args.batch_size, args.input_size)
    targets = torch.randint(0, args.num_classes, (args.batch_size,))
    return model, loss_fn, optimizer, inputs, targets


def positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {s}")
    return v


def learning_rate(s):
    v = float(s)
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be finite and >= 0, got {s}")
    return v


def device_of(name):
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device("cuda:0" if name == "cuda" else name)


def apply_common(args):
    """--threads (torch.set_num_threads) and --device, as the Rust binary does."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return device_of(args.device)


def device_name(device):
    return "cpu" if device.type == "cpu" else f"{device.type}:{device.index or 0}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return train_main(argv[1:])
    if argv[:1] == ["eval"]:
        return eval_main(argv[1:])
    if argv[:1] == ["bench"]:
        return bench_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=positive, default=10)
    p.add_argument("--input-size", type=positive, default=10)
    p.add_argument("--num-classes", type=positive, default=3)
    p.add_argument("--lr", type=learning_rate, default=0.01)
    p.add_argument("--steps", type=positive, default=1)
    p.add_argument("--threads", type=positive, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    device = apply_common(args)
    torch.manual_seed(args.seed)

    # ---- the seed, verbatim but for the flags and the record --------------
    model, loss_fn, optimizer, inputs, targets = seed_setup(args)

    record = {
        "initial": params(model),
        "inputs": inputs.tolist(),
        "targets": targets.tolist(),
    }
    model.to(device)
    inputs, targets = inputs.to(device), targets.to(device)

    losses = []
    for step in range(args.steps):
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        if not args.json:
            print(loss)
        losses.append(loss.item())

        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            record["outputs"] = outputs.detach().cpu().tolist()
            record["grad"] = {
                "weight": model.linear.weight.grad.cpu().tolist(),
                "bias": model.linear.bias.grad.cpu().tolist(),
            }
        optimizer.step()
    # -----------------------------------------------------------------------

    if args.json:
        doc = {
            "torch_version": torch.__version__.split("+")[0],
            "device": device_name(device),
            "config": {
                "seed": args.seed,
                "batch_size": args.batch_size,
                "input_size": args.input_size,
                "num_classes": args.num_classes,
                "lr": args.lr,
                "steps": args.steps,
            },
            "initial": record["initial"],
            "inputs": record["inputs"],
            "targets": record["targets"],
            "outputs": record["outputs"],
            "losses": losses,
            "grad": record["grad"],
            "final": params(model),
        }
        # Python floats print the f32 values exactly (as f64), so they read
        # back as the same f32.
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")


def params(model):
    return {
        "weight": model.linear.weight.detach().cpu().tolist(),
        "bias": model.linear.bias.detach().cpu().tolist(),
    }


# ---------------------------------------------------------------- train --

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
BUNDLED = {"iris": "iris.csv", "wine": "wine_data.csv", "digits": "digits.csv.gz"}


def parse_csv(lines, name):
    """Numeric feature columns, an integer label last; a first line that is
    not all numbers is a header. The rules of src/data.rs."""
    rows, labels, seen_first = [], [], False
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if not seen_first:
            seen_first = True
            try:
                [float(c) for c in cells]
            except ValueError:
                continue
        rows.append([float(c) for c in cells[:-1]])
        labels.append(int(float(cells[-1])))
    return rows, labels


def load_data(args):
    if args.dataset:
        path = os.path.join(DATA_DIR, BUNDLED[args.dataset])
        name = args.dataset
    else:
        path = name = args.data
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows, labels = parse_csv(f, name)
    return name, torch.tensor(rows, dtype=torch.float64), torch.tensor(labels, dtype=torch.int64)


def data_flags(p):
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--dataset", choices=sorted(BUNDLED))
    g.add_argument("--data")


def common_flags(p):
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=positive, default=None)
    p.add_argument("--json", action="store_true")


def load_checkpoint(path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    classes, features = state["linear.weight"].shape
    model = MyModel(features, classes)
    model.load_state_dict(state)  # strict: exactly linear.weight and linear.bias
    stats = None
    if "standardize_mean" in meta and "standardize_std" in meta:
        stats = (torch.tensor(json.loads(meta["standardize_mean"]), dtype=torch.float64),
                 torch.tensor(json.loads(meta["standardize_std"]), dtype=torch.float64))
    return model, stats


def save_checkpoint(model, stats, path):
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "cross-entropy-tch"}
    if stats is not None:
        meta["standardize_mean"] = json.dumps(stats[0].tolist())
        meta["standardize_std"] = json.dumps(stats[1].tolist())
    save_file(state, path, metadata=meta)


def evaluate(model, loss_fn, x, y):
    with torch.no_grad():
        logits = model(x)
        loss = loss_fn(logits, y).item()
        correct = (logits.argmax(1) == y).sum().item()
    return loss, correct / len(y)


def confusion(model, x, y, classes):
    with torch.no_grad():
        pred = model(x).argmax(1).cpu().tolist()
    m = [[0] * classes for _ in range(classes)]
    for t, p in zip(y.cpu().tolist(), pred):
        m[t][p] += 1
    return m


def f32(x):
    """A Python float holding an f32 value exactly (what .item() gives)."""
    return torch.tensor(x, dtype=torch.float32).item()


def train_main(argv):
    p = argparse.ArgumentParser(prog="reference.py train")
    data_flags(p)
    common_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--epochs", type=positive, default=200)
    p.add_argument("--batch-size", type=positive, default=None)
    p.add_argument("--lr", type=learning_rate, default=0.5)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--dampening", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--class-weights", default=None)
    p.add_argument("--no-standardize", action="store_true")
    p.add_argument("--load", default=None)
    p.add_argument("--save", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    device = apply_common(args)
    name, x, y = load_data(args)
    model, stats = load_checkpoint(args.load) if args.load else (None, None)
    classes = model.linear.out_features if model else int(y.max()) + 1
    weights = [float(v) for v in args.class_weights.split(",")] if args.class_weights else None

    torch.manual_seed(args.seed)
    n = len(y)
    n_test = math.ceil(n * args.test_fraction)
    perm = torch.randperm(n)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    if args.no_standardize:
        stats = None
        xs = x.float()
    else:
        if stats is None:
            xtr = x[train_idx]
            std = xtr.std(0, correction=0)
            stats = (xtr.mean(0), std.masked_fill(std == 0, 1.0))
        xs = ((x - stats[0]) / stats[1]).float()

    if model is None:
        model = MyModel(x.shape[1], classes)
    model.to(device)
    x_train, y_train = xs[train_idx].to(device), y[train_idx].to(device)
    x_test, y_test = xs[test_idx].to(device), y[test_idx].to(device)
    n_train = len(y_train)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                dampening=args.dampening, weight_decay=args.weight_decay,
                                nesterov=args.nesterov)
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32).to(device)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=args.label_smoothing)
    batch = min(args.batch_size or n_train, n_train)

    def step(xb, yb):
        outputs = model(xb)
        loss = loss_fn(outputs, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    import time

    epochs = []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        if batch >= n_train:
            step(x_train, y_train)
        else:
            order = torch.randperm(n_train)
            for first in range(0, n_train, batch):
                idx = order[first:first + batch].to(device)
                step(x_train[idx], y_train[idx])
        train_loss, train_acc = evaluate(model, loss_fn, x_train, y_train)
        test_loss, test_acc = evaluate(model, loss_fn, x_test, y_test)
        epochs.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                       "test_loss": test_loss, "test_accuracy": test_acc})
        if not args.quiet and not args.json:
            print(f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f} acc {train_acc:.3f} | "
                  f"test loss {test_loss:.4f} acc {test_acc:.3f}")
    seconds = time.perf_counter() - start
    if args.save:
        save_checkpoint(model, stats, args.save)
    if args.json:
        doc = {
            "torch_version": torch.__version__.split("+")[0],
            "device": device_name(device),
            "config": {
                "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size,
                "lr": args.lr, "momentum": args.momentum, "dampening": args.dampening,
                "weight_decay": args.weight_decay, "nesterov": args.nesterov,
                "label_smoothing": args.label_smoothing, "class_weights": weights,
                "test_fraction": args.test_fraction, "standardize": not args.no_standardize,
            },
            "data": {"name": name, "rows": n, "features": x.shape[1], "classes": classes,
                     "train_rows": n_train, "test_rows": len(y_test)},
            "epochs": epochs,
            "final": epochs[-1],
            "confusion_matrix": confusion(model, x_test, y_test, classes),
            "train_seconds": seconds,
            "samples_per_second": n_train * args.epochs / seconds,
        }
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")


def eval_main(argv):
    p = argparse.ArgumentParser(prog="reference.py eval")
    data_flags(p)
    common_flags(p)
    p.add_argument("--load", required=True)
    p.add_argument("--no-standardize", action="store_true")
    args = p.parse_args(argv)
    device = apply_common(args)
    name, x, y = load_data(args)
    model, stats = load_checkpoint(args.load)
    if args.no_standardize:
        xs = x.float()
    elif stats is None:
        sys.exit("the checkpoint holds no standardization statistics; pass --no-standardize")
    else:
        xs = ((x - stats[0]) / stats[1]).float()
    model.to(device)
    xs, y = xs.to(device), y.to(device)
    classes = model.linear.out_features
    loss, acc = evaluate(model, nn.CrossEntropyLoss(), xs, y)
    doc = {"torch_version": torch.__version__.split("+")[0], "device": device_name(device),
           "data": {"name": name, "rows": len(y), "features": x.shape[1], "classes": classes,
                    "train_rows": 0, "test_rows": len(y)},
           "loss": loss, "accuracy": acc, "confusion_matrix": confusion(model, xs, y, classes)}
    if args.json:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"loss {loss:.4f} accuracy {acc:.3f}")


# ---------------------------------------------------------------- bench --

def bench_main(argv):
    """The seed's step in a timed loop, as `cross-entropy-tch bench` runs it."""
    import time

    p = argparse.ArgumentParser(prog="reference.py bench")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive, default=10)
    p.add_argument("--input-size", type=positive, default=10)
    p.add_argument("--num-classes", type=positive, default=3)
    p.add_argument("--lr", type=learning_rate, default=0.01)
    p.add_argument("--steps", type=positive, default=1)
    p.add_argument("--warmup", type=int, default=100)
    common_flags(p)
    args = p.parse_args(argv)
    device = apply_common(args)
    torch.manual_seed(args.seed)
    model, loss_fn, optimizer, inputs, targets = seed_setup(args)
    model.to(device)
    inputs, targets = inputs.to(device), targets.to(device)

    def step():
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        final_loss = loss_fn(model(inputs), targets).item()
    doc = {"implementation": "pytorch", "device": device_name(device),
           "threads": torch.get_num_threads(), "batch_size": args.batch_size,
           "input_size": args.input_size, "num_classes": args.num_classes,
           "warmup": args.warmup, "steps": args.steps,
           "us_per_step": seconds * 1e6 / args.steps, "final_loss": final_loss}
    if args.json:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"{args.steps} steps: {doc['us_per_step']:.2f} us/step; loss after: {final_loss}")


if __name__ == "__main__":
    main()
