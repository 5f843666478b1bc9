#!/usr/bin/env python3
"""Random cross-entropy cases over the whole option grid, computed by PyTorch's
`torch.nn.functional.cross_entropy`: the reference that tests/loss_parity.rs
matches, loss and gradient, case by case.

    .venv/bin/python scripts/loss_cases.py [--seed 0] > cases.json

Grid: reduction x {no weight, weight} x {no ignore, ignore_index in [0, C),
ignore_index = -100, ignore_index >= C} x {eps 0, 0.15} x shapes {(C), (N, C),
(N, C, d1), (N, C, d1, d2)} with class-index targets, the same without the
ignore variants for class-probability targets, and edge cases. Sizes are drawn
at random per case. Every float is an f32 written exactly (as a double).
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F

REDUCTIONS = ["none", "mean", "sum"]


def draw_shape(g, rank):
    c = int(torch.randint(2, 8, (1,), generator=g))
    n = int(torch.randint(1, 6, (1,), generator=g))
    spatial = [int(torch.randint(1, 5, (1,), generator=g)) for _ in range(max(rank - 2, 0))]
    return [c] if rank == 1 else [n, c] + spatial


def floats(t):
    """A tensor's values, NaN (a PyTorch-defined result here) as null: JSON has no NaN."""
    return [None if v != v else v for v in t.flatten().tolist()]


def case(name, x, target, weight=None, ignore_index=-100, reduction="mean", eps=0.0):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(x, target, weight=weight, ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=eps)
    grad = None
    if x.numel() > 0:
        loss.sum().backward()
        grad = floats(x.grad)
    return {
        "name": name,
        "shape": list(x.shape),
        "input": x.detach().flatten().tolist(),
        "target_kind": "prob" if target.is_floating_point() else "index",
        "target_shape": list(target.shape),
        "target": target.flatten().tolist(),
        "weight": None if weight is None else weight.tolist(),
        "ignore_index": ignore_index,
        "reduction": reduction,
        "label_smoothing": eps,
        "loss_shape": list(loss.shape),
        "loss": floats(loss.detach()),
        "grad": grad,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    g = torch.Generator().manual_seed(args.seed)
    cases = []
    for rank in [1, 2, 3, 4]:
        for reduction in REDUCTIONS:
            for weighted in [False, True]:
                for eps in [0.0, 0.15]:
                    for ignore in ["none", "class", "-100", ">=C", "probabilities"]:
                        shape = draw_shape(g, rank)
                        c = shape[0] if rank == 1 else shape[1]
                        x = torch.randn(shape, generator=g) * 3
                        weight = torch.rand(c, generator=g) * 2 + 0.1 if weighted else None
                        name = f"rank {rank} {reduction} weight={weighted} eps={eps} ignore={ignore}"
                        if ignore == "probabilities":
                            q = torch.softmax(torch.randn(shape, generator=g), dim=0 if rank == 1 else 1)
                            cases.append(case(name, x, q, weight, -100, reduction, eps))
                            continue
                        tshape = [] if rank == 1 else [shape[0]] + shape[2:]
                        t = torch.randint(0, c, tshape, generator=g)
                        ignore_index = {"none": -100, "class": 1, "-100": -100, ">=C": c + 3}[ignore]
                        if ignore != "none":
                            mask = torch.rand(tshape, generator=g) < 0.35
                            t = torch.where(mask, torch.full_like(t, ignore_index), t)
                        cases.append(case(name, x, t, weight, ignore_index, reduction, eps))
    # Edge cases.
    x = torch.randn(4, 3, generator=g)
    for reduction in REDUCTIONS:
        cases.append(case(f"all ignored {reduction}", x, torch.full((4,), -100), reduction=reduction))
        cases.append(case(f"all ignored smoothed {reduction}", x, torch.full((4,), -100),
                          reduction=reduction, eps=0.15))
        cases.append(case(f"zero total weight {reduction}", x, torch.tensor([0, 2, 0, 2]),
                          weight=torch.tensor([0.0, 1.0, 0.0]), reduction=reduction))
        cases.append(case(f"empty batch {reduction}", torch.randn(0, 3, generator=g),
                          torch.zeros(0, dtype=torch.long), reduction=reduction))
        cases.append(case(f"empty batch probabilities {reduction}", torch.randn(0, 3, generator=g),
                          torch.zeros(0, 3), reduction=reduction))
        for scale in [1e4, 1e30]:
            big = torch.tensor([[scale, -scale, 0.0], [-scale, 0.5, scale], [1.0, 2.0, 3.0]])
            cases.append(case(f"logits {scale:g} {reduction}", big, torch.tensor([0, 2, 1]),
                              reduction=reduction))
    json.dump(cases, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
