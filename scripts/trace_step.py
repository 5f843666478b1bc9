#!/usr/bin/env python3
"""Lists the ATen calls of one PyTorch training step's forward and
`loss.backward()`, in order, with their shapes, strides and scalars: what
`csrc/step.cpp` (`ManualStep`) must call, in that order, to get autograd's
bits. A TorchDispatchMode sees every call below autograd, those the
autograd engine makes included.

  .venv/bin/python scripts/trace_step.py [--hidden 4] [--dropout 0.2]
      [--class-weights 0.5,2,1] [--label-smoothing 0.1]
"""
import argparse

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode


def describe(a):
    if isinstance(a, torch.Tensor):
        strides = f" strides {a.stride()}" if a.dim() >= 2 else ""
        return f"{str(a.dtype)[6:]}{list(a.shape)}{strides}"
    if isinstance(a, (list, tuple)):
        return "[" + ", ".join(describe(x) for x in a) + "]"
    return repr(a)


class Trace(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is not torch.ops.aten.detach.default:  # autograd's bookkeeping
            print(f"  {func}({', '.join(describe(a) for a in args)})")
        return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--features", type=int, default=5)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], default=[])
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--class-weights", type=lambda s: [float(v) for v in s.split(",")])
    p.add_argument("--label-smoothing", type=float, default=0.0)
    a = p.parse_args()
    torch.manual_seed(0)
    sizes = [a.features, *a.hidden, a.classes]
    layers = []
    for i, (d, h) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(d, h))
        if i < len(sizes) - 2:
            layers += [torch.nn.ReLU(), torch.nn.Dropout(a.dropout)]
    model = torch.nn.Sequential(*layers).train()
    x = torch.randn(a.batch, a.features)
    y = torch.randint(0, a.classes, (a.batch,))
    weight = torch.tensor(a.class_weights) if a.class_weights else None
    with Trace():
        print("forward")
        loss = F.cross_entropy(model(x), y, weight=weight, label_smoothing=a.label_smoothing)
        print("loss.backward()")
        loss.backward()


if __name__ == "__main__":
    main()
