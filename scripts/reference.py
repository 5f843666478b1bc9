#!/usr/bin/env python3
"""The PyTorch reference: the seed example as written, with the same flags as
the Rust binary. `--json` writes the same JSON document as
`cross-entropy-tch --json`, which is what the parity tests compare, bit for bit.

    .venv/bin/python scripts/reference.py [--seed 0] [--json] ...
"""
import argparse
import json
import math
import sys

import torch
import torch.nn as nn


class MyModel(nn.Module):
    def __init__(self, input_size, output_size):
        super(MyModel, self).__init__()
        self.linear = nn.Linear(input_size, output_size)

    def forward(self, x):
        return self.linear(x)


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


def device_name(device):
    return "cpu" if device.type == "cpu" else f"{device.type}:{device.index or 0}"


def main(argv=None):
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

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = device_of(args.device)
    torch.manual_seed(args.seed)

    # ---- the seed, verbatim but for the flags and the record --------------
    model = MyModel(args.input_size, args.num_classes)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

    inputs = torch.randn(args.batch_size, args.input_size)
    targets = torch.randint(0, args.num_classes, (args.batch_size,))

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


if __name__ == "__main__":
    main()
