#!/usr/bin/env python3
"""Compares two `--json` documents (the Rust binary's and scripts/reference.py's)
number by number as f32 bit patterns, and says whether they are bit-equal.

    .venv/bin/python scripts/compare.py rust.json torch.json

Exit status 0 when every number is bit-equal, 1 otherwise.
"""
import json
import struct
import sys

KEYS = ["initial", "inputs", "targets", "outputs", "losses", "grad", "final"]


def leaves(value, path):
    if isinstance(value, dict):
        for k in value:
            yield from leaves(value[k], f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    a, b = (json.load(open(p)) for p in argv[1:])
    bad = 0
    total = 0
    for key in ["torch_version", "device", "config"]:
        if a.get(key) != b.get(key):
            print(f"{key}: {a.get(key)!r} != {b.get(key)!r}")
            bad += 1
    for key in KEYS:
        la, lb = list(leaves(a.get(key), key)), list(leaves(b.get(key), key))
        if [p for p, _ in la] != [p for p, _ in lb]:
            print(f"{key}: shapes differ ({len(la)} numbers vs {len(lb)})")
            bad += 1
            continue
        for (path, x), (_, y) in zip(la, lb):
            total += 1
            if f32_bits(x) != f32_bits(y):
                bad += 1
                if bad <= 10:
                    print(f"{path}: {x!r} != {y!r}")
    if bad:
        print(f"DIFFERENT: {bad} mismatches")
        return 1
    print(f"bit-equal: all {total} numbers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
