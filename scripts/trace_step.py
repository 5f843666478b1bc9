#!/usr/bin/env python3
"""Lists the ATen calls of one PyTorch training step's forward and
`loss.backward()`, in order and nested as they call each other, with their
shapes: what `csrc/step.cpp` (`ManualStep`) must call, in that order, to get
autograd's bits. The backward shows each autograd node (`MulBackward0`, ...)
with the calls it makes. From torch.profiler, which watches a normal run (a
TorchDispatchMode would not: while one is active, ATen takes its branches
for tensor subclasses, and cross_entropy's label smoothing with class
weights is one).

  .venv/bin/python scripts/trace_step.py [--hidden 4] [--dropout 0.2]
      [--class-weights 0.5,2,1] [--label-smoothing 0.1]
"""
import argparse

import torch
import torch.nn.functional as F


def show(event, depth=1):
    print(f"{'  ' * depth}{event.name} {event.input_shapes}")
    for child in event.cpu_children:
        show(child, depth + 1)


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
    with torch.profiler.profile(record_shapes=True) as prof:
        with torch.profiler.record_function("forward"):
            loss = F.cross_entropy(model(x), y, weight=weight, label_smoothing=a.label_smoothing)
        with torch.profiler.record_function("loss.backward()"):
            loss.backward()
    for event in prof.events():
        if event.name in ("forward", "loss.backward()"):
            print(event.name)
            for child in event.cpu_children:
                show(child)

if __name__ == "__main__":
    main()
