#!/usr/bin/env python3
"""The PyTorch reference: the example as written, with the same flags as
the Rust binary. `--json` writes the same JSON document as
`cross-entropy-tch --json`, which is what the parity tests compare, bit for bit.

    .venv/bin/python scripts/reference.py [--seed 0] [--features 10] [--classes 3] [--json] ...
    .venv/bin/python scripts/reference.py train --dataset iris [--json] ...
    .venv/bin/python scripts/reference.py eval --load model.safetensors --dataset iris
    .venv/bin/python scripts/reference.py bench [--steps 1000] [--json] ...

`train` and `eval` do what `cross-entropy-tch train` and `eval` do, in the
same order (seed, split, standardize, model, optimizer; per epoch: shuffle, steps,
evaluation), so their per-epoch numbers are the same.

It refuses what the binary refuses, by the same rules written out here (it
reads nothing from the Rust side): flag values (ranges, and numbers spelled
as Rust's `str::parse` reads them), CSV files and checkpoints. A refusal is
one line on stderr, `error: ...`, and exit status 2; a failure while running
(an output file that cannot be written, a diverged training) is one line and
exit status 1.
"""
import argparse
import contextlib
import gzip
import inspect
import json
import math
import os
import re
import sys
import time
from collections import namedtuple

import torch
import torch.nn as nn


class MyModel(nn.Module):
    def __init__(self, input_size, output_size):
        super(MyModel, self).__init__()
        self.linear = nn.Linear(input_size, output_size)

    def forward(self, x):
        return self.linear(x)


class MLP(nn.Module):
    """train --hidden H1,H2 --dropout P."""

    def __init__(self, features, hidden, classes, dropout):
        super().__init__()
        layers, d = [], features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        self.layers = nn.Sequential(*layers, nn.Linear(d, classes))

    def forward(self, x):
        return self.layers(x)


def example_setup(args):
    """The example's first five lines, with its constants as flags."""
    model = MyModel(args.features, args.classes)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

    inputs = torch.randn(args.batch_size, args.features)
    targets = torch.randint(0, args.classes, (args.batch_size,))
    return model, loss_fn, optimizer, inputs, targets


# --------------------------------------------------------------- errors --

class UsageError(Exception):
    """Bad flags, data or checkpoint: exit status 2."""


class Failure(Exception):
    """A failure while doing the work (an output file, a diverged training):
    exit status 1."""


def one_line(text):
    return " ".join(str(text).split())


def fail(message, status):
    try:
        sys.stdout.flush()
    except OSError:  # a closed stdout: the message still goes to stderr
        pass
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(status)


# ------------------------------------------------ numbers as Rust reads --
#
# Python's int() and float() accept more than Rust's str::parse: "1_0",
# surrounding whitespace, non-ASCII digits. These accept exactly Rust's
# grammar, so a value one side takes the other takes too.

# char::is_whitespace (what str::trim strips); Python's str.strip() would
# also strip \x1c-\x1f.
RUST_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680"
                   + "".join(chr(c) for c in range(0x2000, 0x200B))
                   + "\u2028\u2029\u202f\u205f\u3000")
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
# f64::from_str: Sign? ('inf' | 'infinity' | 'nan' | Number), Number =
# (Digit+ | Digit+ '.' Digit* | Digit* '.' Digit+) Exp?, Exp = 'e' Sign? Digit+,
# letters in any case.
_FLOAT = re.compile(
    r"[+-]?(?:inf|infinity|nan|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?)",
    re.ASCII | re.IGNORECASE)


def rust_trim(s):
    return s.strip(RUST_WHITESPACE)


def rust_int(s, bits, signed):
    """`s.parse::<iN>()` (signed) or `::<uN>()`: the value, or None."""
    if not _INTEGER.fullmatch(s) or (not signed and s.startswith("-")):
        return None
    digits = s.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 20:  # beyond any 64-bit value
        return None
    value = -int(digits) if s.startswith("-") else int(digits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return value if lo <= value <= hi else None


def rust_f64(s):
    """`s.parse::<f64>()`: the value (maybe inf or nan), or None."""
    return float(s) if _FLOAT.fullmatch(s) else None


# ---------------------------------------------------------------- flags --

class Parser(argparse.ArgumentParser):
    """argparse as clap behaves: no abbreviated flags, a flag given twice is
    an error, and an error is one line."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(**kwargs)
        for name in (None, "store"):
            self.register("action", name, StoreOnce)
        self.register("action", "store_true", StoreTrueOnce)

    def error(self, message):
        fail(message, 2)


def _once(parser, namespace, action, option):
    seen = vars(namespace).setdefault("_seen", set())
    if action.dest in seen:
        parser.error(f"the argument '{option}' cannot be used multiple times")
    seen.add(action.dest)


class StoreOnce(argparse._StoreAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _once(parser, namespace, self, option_string)
        super().__call__(parser, namespace, values, option_string)


class StoreTrueOnce(argparse._StoreTrueAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _once(parser, namespace, self, option_string)
        super().__call__(parser, namespace, values, option_string)


def at_least(minimum, bits, signed):
    """A whole number >= minimum that fits the Rust flag's type (trimmed)."""
    def parse(s):
        v = rust_int(rust_trim(s), bits, signed)
        if v is None or v < minimum:
            raise argparse.ArgumentTypeError(
                f"must be a whole number of at least {minimum} "
                f"(that fits in {'i' if signed else 'u'}{bits}), got '{s}'")
        return v
    return parse


def whole(bits, signed):
    """A Rust integer flag without a custom parser (clap's: not trimmed)."""
    def parse(s):
        v = rust_int(s, bits, signed)
        if v is None:
            raise argparse.ArgumentTypeError(
                f"expected a whole number that fits in {'i' if signed else 'u'}{bits}, got '{s}'")
        return v
    return parse


def finite_where(test, what):
    """A finite number (trimmed) for which test(v) holds."""
    def parse(s):
        v = rust_f64(rust_trim(s))
        if v is None or not math.isfinite(v) or not test(v):
            raise argparse.ArgumentTypeError(f"{what}, got '{s}'")
        return v
    return parse


learning_rate = finite_where(lambda v: v >= 0, "the learning rate must be finite and >= 0")
non_negative = finite_where(lambda v: v >= 0, "must be a finite number >= 0")
unit_interval = finite_where(lambda v: 0 <= v <= 1, "must be between 0 and 1")
open_fraction = finite_where(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)")
positive = finite_where(lambda v: v > 0, "must be a finite number > 0")
# --clip-norm-type: clip_grad_norm_'s norm_type.
NORM_TYPES = {"1": 1.0, "2": 2.0, "inf": math.inf}


def betas_pair(s):
    """--betas B1,B2: two numbers in [0, 1)."""
    parts = s.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers B1,B2 (e.g. 0.9,0.999), got '{s}'")
    beta = finite_where(lambda v: 0 <= v < 1, "each beta must be a number in [0, 1)")
    return (beta(parts[0]), beta(parts[1]))


def hidden_list(s):
    """--hidden 64,32: whole numbers >= 1."""
    return [at_least(1, 64, signed=False)(v) for v in s.split(",")]


def class_weight_list(s):
    """--class-weights 1,2,0.5: each value finite and >= 0."""
    return [non_negative(v) for v in s.split(",")]


def path_arg(s):
    if not s:
        raise argparse.ArgumentTypeError("a file path is required, got an empty value")
    return s


def device_request(s):
    """cpu, cuda (cuda:0), cuda:N or auto; trimmed, any case."""
    t = rust_trim(s).translate(ASCII_LOWER)
    if t in ("auto", "cpu"):
        return (t, None)
    if t == "cuda":
        return ("cuda", 0)
    n = rust_int(t[len("cuda:"):], 64, signed=False) if t.startswith("cuda:") else None
    if n is None:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got '{s}'")
    return ("cuda", n)


def common_flags(p):
    p.add_argument("--device", type=device_request, default=("auto", None))
    p.add_argument("--threads", type=at_least(1, 32, signed=True), default=None)
    p.add_argument("--json", action="store_true")


def example_flags(p):
    """The example's constants as flags (the example command and bench)."""
    p.add_argument("--seed", type=whole(64, signed=True), default=0)
    p.add_argument("--batch-size", type=at_least(1, 64, signed=True), default=10)
    p.add_argument("--features", type=at_least(1, 64, signed=True), default=10)
    p.add_argument("--classes", type=at_least(2, 64, signed=True), default=3)
    p.add_argument("--lr", type=learning_rate, default=0.01)
    p.add_argument("--steps", type=at_least(1, 64, signed=False), default=1)
    common_flags(p)


# The largest tensor the example agrees to allocate, in elements (4 GiB of f32).
MAX_ELEMENTS = 1 << 30


def check_example_sizes(args):
    for what, elements in (
            ("--batch-size x --features (inputs)", args.batch_size * args.features),
            ("--features x --classes (weight)", args.features * args.classes),
            ("--batch-size x --classes (logits)", args.batch_size * args.classes)):
        if elements > MAX_ELEMENTS:
            raise UsageError(f"{what} is over {MAX_ELEMENTS} elements; use smaller sizes")


def device_of(request):
    kind, n = request
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count()
    if count == 0:
        raise UsageError(f"--device cuda:{n}: PyTorch sees no CUDA device on this machine; "
                         "use --device cpu or auto")
    if n >= count:
        raise UsageError(f"--device cuda:{n}: this machine has {count} CUDA device(s), "
                         f"cuda:0 to cuda:{count - 1}")
    return torch.device(f"cuda:{n}")


def apply_common(args):
    """--device and --threads (torch.set_num_threads), as the Rust binary does."""
    device = device_of(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return device


def device_name(device):
    return "cpu" if device.type == "cpu" else f"{device.type}:{device.index or 0}"


# --------------------------------------------------------------- example --

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        run(argv)
        sys.stdout.flush()
    except UsageError as e:
        fail(e, 2)
    except Failure as e:
        fail(e, 1)
    except BrokenPipeError:
        # A closed stdout (`| head`) is the reader saying it has enough, as
        # the binary takes it: end quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as e:  # a bug, or PyTorch failing (out of memory): one line
        if os.environ.get("REFERENCE_TRACEBACK"):
            raise
        fail(f"internal error: {type(e).__name__}: {e} "
             "(REFERENCE_TRACEBACK=1 shows the traceback)", 1)


COMMANDS = {}


def run(argv):
    if argv[:1] == ["help"]:  # as clap's help subcommand
        if len(argv) > 2 or (len(argv) == 2 and argv[1] not in COMMANDS):
            raise UsageError(f"unrecognized subcommand '{argv[-1]}'")
        (COMMANDS[argv[1]][0]() if len(argv) == 2 else example_parser()).print_help()
        return
    if argv[:1] and argv[0] in COMMANDS:
        make_parser, command = COMMANDS[argv[0]]
        return command(make_parser().parse_args(argv[1:]))
    return example_main(example_parser().parse_args(argv))


def example_parser():
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("-V", "--version", action="version",
                   version=f"reference.py (torch {torch.__version__})")
    example_flags(p)
    return p


def example_main(args):
    check_example_sizes(args)
    device = apply_common(args)
    torch.manual_seed(args.seed)

    # ---- the example, verbatim but for the flags and the record --------------
    model, loss_fn, optimizer, inputs, targets = example_setup(args)

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
                "features": args.features,
                "classes": args.classes,
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


# ----------------------------------------------------------------- data --

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
BUNDLED = {"iris": "iris.csv", "wine": "wine_data.csv", "digits": "digits.csv.gz"}
MAX_LABEL = 1_000_000

Data = namedtuple("Data", "name x y classes")


def parse_label(cell):
    """A class number: an integer, or a whole number written as a float
    (2.0, 1e2) under 1e15; 0 to MAX_LABEL. Returns (label, None) or (None, why)."""
    label = rust_int(cell, 64, signed=True)
    if label is None:
        v = rust_f64(cell)
        if v is None:
            return None, f"'{cell}' is not a class number"
        if not (math.isfinite(v) and v.is_integer() and abs(v) < 1e15):
            return None, f"'{cell}' is not a whole number"
        label = int(v)
    if label < 0:
        return None, f"{label} is negative; labels are class numbers 0, 1, 2, ..."
    if label > MAX_LABEL:
        return None, f"{label} is too large for a class number (at most {MAX_LABEL})"
    return label, None


def parse_csv(lines, name):
    """Numeric feature columns, an integer class label last. Lines end at
    b"\\n" (a trailing \\r is dropped) and must be UTF-8; blank lines are
    skipped; a first line with a cell that is not a number is a header; every
    row has as many cells (at least 2) as the first data row; features are
    finite; at least 2 distinct labels. Returns (rows, labels)."""
    rows, labels, cols, seen_first = [], [], None, False
    for line_no, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UsageError(f"{name}, line {line_no}: not UTF-8 text (byte {e.start + 1})")
        line = line.rstrip("\r\n")
        if not rust_trim(line):
            continue
        cells = [rust_trim(c) for c in line.split(",")]
        if not seen_first:
            seen_first = True
            if any(rust_f64(c) is None for c in cells):
                continue  # a header
        if cols is None:
            cols = len(cells)
        if cols < 2:
            raise UsageError(f"{name}, line {line_no}: one column; "
                             "expected feature columns and a label column")
        if len(cells) != cols:
            raise UsageError(f"{name}, line {line_no}: {len(cells)} columns, "
                             f"expected {cols} like the first data row")
        row = []
        for col, cell in enumerate(cells[:-1], 1):
            v = rust_f64(cell)
            if v is None:
                raise UsageError(f"{name}, line {line_no}, column {col}: '{cell}' is not a number")
            if not math.isfinite(v):
                raise UsageError(
                    f"{name}, line {line_no}, column {col}: '{cell}' is not a finite number")
            row.append(v)
        label, why = parse_label(cells[-1])
        if why:
            raise UsageError(f"{name}, line {line_no}, column {cols} (the label): {why}")
        rows.append(row)
        labels.append(label)
    if cols is None:
        raise UsageError(f"{name}: no data rows (the file is empty or holds only a header)")
    if len(set(labels)) < 2:
        raise UsageError(f"{name}: every row has label {labels[0]}; "
                         "classification needs at least 2 classes")
    return rows, labels


def load_data(args):
    if args.dataset:
        path, name = os.path.join(DATA_DIR, BUNDLED[args.dataset]), args.dataset
        opener = gzip.open if path.endswith(".gz") else open
    else:
        path = name = args.data
        opener = open
        if os.path.isdir(path):
            raise UsageError(f"--data {path}: is a directory, expected a CSV file")
    try:
        f = opener(path, "rb")
    except OSError as e:
        raise UsageError(f"--data {path}: cannot open: {e.strerror or e}")
    try:
        with f:
            rows, labels = parse_csv(f, name)
    except OSError as e:
        raise UsageError(f"{name}: read error: {e.strerror or e}")
    y = torch.tensor(labels, dtype=torch.int64)
    return Data(name, torch.tensor(rows, dtype=torch.float64), y, int(y.max()) + 1)


def data_flags(p):
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--dataset", choices=sorted(BUNDLED))
    g.add_argument("--data", type=path_arg)


# ---------------------------------------------------------- checkpoints --

WEIGHT, BIAS = "linear.weight", "linear.bias"

# layers: [(weight, bias)], input to output.
Checkpoint = namedtuple("Checkpoint", "layers classes features hidden stats")


def layer_names(count):
    """MyModel's `linear`, or the MLP's Sequential indices of its Linears."""
    return ["linear"] if count == 1 else [f"layers.{3 * i}" for i in range(count)]


def json_floats(text, what):
    """A JSON array of finite numbers, as a list of floats."""
    def no_constant(name):
        raise ValueError(f"{name} is not JSON")
    try:
        values = json.loads(text, parse_constant=no_constant)
        if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError("expected an array of numbers")
        values = [float(v) for v in values]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("a number out of range")
    except (ValueError, OverflowError, RecursionError) as e:
        raise UsageError(f"{what} metadata: {e}")
    return values


def f32_tensor(data, shape):
    flat = torch.frombuffer(bytearray(data), dtype=torch.float32) if data else torch.empty(0)
    return flat.reshape(shape)


def load_checkpoint(path, flag="--load"):
    """linear.weight (C, D) and linear.bias (C,), float32 (other tensors are
    ignored), and the standardization statistics from the metadata when
    both standardize_mean and standardize_std are there."""
    import safetensors

    shown = f"{flag} {path}"
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise UsageError(f"{shown}: cannot read: {e.strerror or e}")
    # safetensors first: its first byte is its header's length, which can
    # look like a pickle's protocol mark (0x80).
    try:
        tensors = dict(safetensors.deserialize(blob))
        header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    except Exception as e:
        if blob.startswith(b"PK\x03\x04") or (len(blob) > 1 and blob[0] == 0x80 and blob[1] <= 5):
            tensors, header = load_pt(path, shown), {}
        else:
            raise UsageError(f"{shown}: not a valid safetensors file ({e})")
    count = 1 if WEIGHT in tensors else max(
        next(k for k in range(len(tensors) + 1) if f"layers.{3 * k}.weight" not in tensors), 1)
    layers, previous = [], None
    for layer in layer_names(count):
        wn, bn = f"{layer}.weight", f"{layer}.bias"
        for name in (wn, bn):
            if name not in tensors:
                raise UsageError(f"{shown}: no tensor named '{name}' (the file has "
                                 f"{sorted(tensors)}); expected {WEIGHT} and {BIAS} (MyModel's "
                                 "state_dict() names) or layers.0.weight, layers.0.bias, "
                                 "layers.3.weight, ... (the MLP's)")
            if tensors[name]["dtype"] != "F32":
                raise UsageError(f"{shown}: {name} has dtype {tensors[name]['dtype']}, "
                                 "expected F32 (float32)")
        w, b = tensors[wn], tensors[bn]
        ws, bs = list(w["shape"]), list(b["shape"])
        if len(ws) != 2 or len(bs) != 1 or bs[0] != ws[0] or (
                previous is not None and ws[1] != previous):
            raise UsageError(f"{shown}: {wn} has shape {ws} and {bn} {bs}; expected (out, in) "
                             "and (out,), each in the previous layer's out")
        previous = ws[0]
        layers.append((f32_tensor(w["data"], ws), f32_tensor(b["data"], bs)))
    features = layers[0][0].shape[1]
    meta = header.get("__metadata__") or {}
    stats = None
    if "standardize_mean" in meta and "standardize_std" in meta:
        mean = json_floats(meta["standardize_mean"], f"{shown}: standardize_mean")
        std = json_floats(meta["standardize_std"], f"{shown}: standardize_std")
        if len(mean) != features or len(std) != features:
            raise UsageError(f"{shown}: the standardization metadata has {len(mean)} values, "
                             f"the model {features} features")
        stats = (torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
    hidden = [w.shape[0] for w, _ in layers[:-1]]
    return Checkpoint(layers, layers[-1][0].shape[0], features, hidden, stats)


# torch dtypes by safetensors' names, for .pt files.
PT_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}


def load_pt(path, shown):
    """A torch.save(model.state_dict()) file as safetensors-like entries.
    torch.load(weights_only=True) runs nothing but PyTorch's allow-list;
    then, as the binary: a dict whose every value is a tensor, or refused."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{shown}: not a readable torch.save file ({first})")
    if not isinstance(sd, dict):
        raise UsageError(f"{shown}: the file holds a {type(sd).__name__} object, not a "
                         "state_dict (a dict of tensors); save model.state_dict() itself")
    entries = {}
    for key in sorted(sd):
        v = sd[key]
        if not torch.is_tensor(v):
            raise UsageError(f"{shown}: '{key}' is a {type(v).__name__}, not a tensor: only a "
                             "state_dict (a dict of tensors) is read; save model.state_dict() "
                             "itself")
        v = v.detach().contiguous()
        dtype = PT_DTYPES.get(v.dtype, str(v.dtype))
        data = v.numpy().tobytes() if dtype == "F32" else b""
        entries[key] = {"dtype": dtype, "shape": list(v.shape), "data": data}
    return entries


def checkpoint_fits(ck, data):
    """The checkpoint's class count, if its model fits the data."""
    if ck.features != data.x.shape[1]:
        first = layer_names(len(ck.layers))[0]
        raise UsageError(f"the checkpoint's model takes {ck.features} features ({first}.weight is "
                         f"{ck.layers[0][0].shape[0]}x{ck.features}), the data has "
                         f"{data.x.shape[1]}")
    if ck.classes < data.classes:
        raise UsageError(f"the checkpoint's model has {ck.classes} classes, "
                         f"the data has labels up to {data.classes - 1}")
    return ck.classes


def model_of(ck, dropout=0.0):
    model = (MLP(ck.features, ck.hidden, ck.classes, dropout) if ck.hidden
             else MyModel(ck.features, ck.classes))
    state = {}
    for name, (w, b) in zip(layer_names(len(ck.layers)), ck.layers):
        state[f"{name}.weight"], state[f"{name}.bias"] = w, b
    model.load_state_dict(state)  # strict
    return model


class OutputFile:
    """An output path checked before any work (a temporary file made and
    removed next to it), written through a temporary file and a rename."""

    def __init__(self, path, flag):
        if os.path.isdir(path):
            raise Failure(f"{flag} {path}: is a directory, expected a file path")
        parts = [c for c in path.split("/") if c not in ("", ".")]
        name = parts[-1] if parts else ".."
        if name == "..":
            raise Failure(f"{flag} {path}: expected a file path")
        directory = os.path.dirname(path.rstrip("/")) or "."
        self.path = path
        self.tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
        try:
            open(self.tmp, "wb").close()
            os.remove(self.tmp)
        except OSError:
            raise Failure(f"{flag} {path}: cannot write in {directory}")

    def commit(self, write):
        try:
            write(self.tmp)
            os.replace(self.tmp, self.path)
        except OSError as e:
            try:
                os.remove(self.tmp)
            except OSError:
                pass
            raise Failure(f"writing {self.path}: {e.strerror or e}")


def save_checkpoint(model, stats, out):
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "cross-entropy-tch"}
    if stats is not None:
        meta["standardize_mean"] = json.dumps(stats[0].tolist())
        meta["standardize_std"] = json.dumps(stats[1].tolist())
    out.commit(lambda path: save_file(state, path, metadata=meta))


# ---------------------------------------------------------------- train --

def evaluate(model, loss_fn, x, y, autocast=contextlib.nullcontext):
    model.eval()
    with torch.no_grad(), autocast():
        logits = model(x)
        loss = loss_fn(logits, y).item()
        correct = (logits.argmax(1) == y).sum().item()
    return loss, correct / len(y)


def evaluate_ddp(model, loss_fn, x, y, rank, world, autocast=contextlib.nullcontext):
    """evaluate() on one rank of a DDP job, as a DDP script evaluates: the
    rank's rows x[rank::world] (no padding: no row twice), the sum of their
    losses, of their class weights (the mean's denominator) and of their
    correct predictions, summed over the ranks by one all_reduce in float64."""
    import torch.distributed as dist
    xs, ys = x[rank::world], y[rank::world]
    sum_fn = nn.CrossEntropyLoss(weight=loss_fn.weight, label_smoothing=loss_fn.label_smoothing,
                                 reduction="sum")
    model.eval()
    with torch.no_grad(), autocast():
        logits = model(xs)
        loss = sum_fn(logits, ys).double()
        if loss_fn.weight is None:
            denominator = torch.tensor(float(len(ys)), dtype=torch.float64, device=ys.device)
        else:
            denominator = loss_fn.weight[ys].double().sum()
        correct = (logits.argmax(1) == ys).sum().double()
    totals = torch.stack([loss, denominator, correct]).cpu()
    dist.all_reduce(totals)
    loss_sum, denominator, correct = totals.tolist()
    return f32(loss_sum / denominator), correct / len(y)


def confusion(model, x, y, classes, autocast=contextlib.nullcontext):
    with torch.no_grad(), autocast():
        pred = model(x).argmax(1).cpu().tolist()
    m = [[0] * classes for _ in range(classes)]
    for t, p in zip(y.cpu().tolist(), pred):
        m[t][p] += 1
    return m


def confusion_ddp(model, x, y, classes, rank, world, autocast=contextlib.nullcontext):
    """confusion() on one rank of a DDP job: the rank's rows x[rank::world]
    counted, the counts summed over the ranks by one all_reduce."""
    import torch.distributed as dist
    counts = torch.tensor(confusion(model, x[rank::world], y[rank::world], classes, autocast),
                          dtype=torch.int64)
    dist.all_reduce(counts)
    return counts.tolist()


def f32(x):
    """A Python float holding an f32 value exactly (what .item() gives)."""
    return torch.tensor(x, dtype=torch.float32).item()


def train_parser():
    p = Parser(prog="reference.py train")
    data_flags(p)
    p.add_argument("--seed", type=whole(64, signed=True), default=0)
    p.add_argument("--test-fraction", type=open_fraction, default=0.2)
    p.add_argument("--epochs", type=at_least(1, 64, signed=False), default=200)
    p.add_argument("--batch-size", type=at_least(1, 64, signed=False), default=None)
    p.add_argument("--hidden", type=hidden_list, action="extend", default=None)
    p.add_argument("--dropout", type=finite_where(lambda v: 0 <= v < 1, "must be in [0, 1)"),
                   default=0.0)
    # The optimizer's arguments default to None here: torch.optim's own
    # defaults apply (see optimizer_arguments), except SGD's lr.
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd")
    p.add_argument("--lr", type=learning_rate, default=None)
    p.add_argument("--momentum", type=non_negative, default=None)
    p.add_argument("--dampening", type=non_negative, default=None)
    p.add_argument("--weight-decay", type=non_negative, default=None)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--betas", type=betas_pair, default=None)
    p.add_argument("--eps", type=non_negative, default=None)
    p.add_argument("--amsgrad", action="store_true")
    p.add_argument("--alpha", type=non_negative, default=None)
    p.add_argument("--centered", action="store_true")
    p.add_argument("--scheduler", choices=list(SCHEDULERS), default=None)
    p.add_argument("--step-size", type=at_least(1, 64, signed=False), default=None)
    p.add_argument("--gamma", type=positive, default=None)
    p.add_argument("--milestones", type=milestone_list, action="extend", default=None)
    p.add_argument("--t-max", type=at_least(1, 64, signed=False), default=None)
    p.add_argument("--eta-min", type=non_negative, default=None)
    p.add_argument("--start-factor", type=positive, default=None)
    p.add_argument("--end-factor", type=non_negative, default=None)
    p.add_argument("--total-iters", type=at_least(1, 64, signed=False), default=None)
    p.add_argument("--max-lr", type=positive, default=None)
    p.add_argument("--pct-start", type=unit_interval, default=None)
    p.add_argument("--anneal-strategy", choices=["cos", "linear"], default=None)
    p.add_argument("--no-cycle-momentum", action="store_true")
    p.add_argument("--base-momentum", type=unit_interval, default=None)
    p.add_argument("--max-momentum", type=unit_interval, default=None)
    p.add_argument("--div-factor", type=positive, default=None)
    p.add_argument("--final-div-factor", type=positive, default=None)
    p.add_argument("--three-phase", action="store_true")
    p.add_argument("--warmup-epochs", type=at_least(1, 64, signed=False), default=None)
    p.add_argument("--mode", choices=["min", "max"], default=None)
    p.add_argument("--factor", type=positive, default=None)
    p.add_argument("--patience", type=at_least(0, 64, signed=False), default=None)
    p.add_argument("--threshold", type=non_negative, default=None)
    p.add_argument("--threshold-mode", choices=["rel", "abs"], default=None)
    p.add_argument("--cooldown", type=at_least(0, 64, signed=False), default=None)
    p.add_argument("--min-lr", type=non_negative, default=None)
    p.add_argument("--clip-grad-norm", type=positive, default=None)
    p.add_argument("--clip-norm-type", type=rust_trim, choices=list(NORM_TYPES), default=None)
    p.add_argument("--clip-grad-value", type=positive, default=None)
    p.add_argument("--label-smoothing", type=unit_interval, default=0.0)
    # Repeatable, as clap's comma-delimited list: the values add up.
    p.add_argument("--class-weights", type=class_weight_list, action="extend", default=None)
    p.add_argument("--no-standardize", action="store_true")
    # Rust's opt-out of its exact fast step; PyTorch always steps through
    # autograd (loss.backward()), so here it changes nothing.
    p.add_argument("--autograd", action="store_true")
    # torch.autocast(device.type, dtype) around forward and loss; fp16
    # trains with torch.amp.GradScaler (its two arguments below).
    p.add_argument("--amp", choices=list(AMP_DTYPES), default=None)
    p.add_argument("--init-scale", type=positive, default=None)
    p.add_argument("--growth-interval", type=at_least(1, 64, signed=True), default=None)
    p.add_argument("--load", type=path_arg, default=None)
    p.add_argument("--save", type=path_arg, default=None)
    p.add_argument("--checkpoint", type=path_arg, default=None)
    p.add_argument("--checkpoint-every", type=at_least(1, 64, signed=False), default=None)
    p.add_argument("--resume", type=path_arg, default=None)
    p.add_argument("--quiet", action="store_true")
    # Under torchrun (WORLD_SIZE set) each process is one rank of a DDP
    # job; --nproc is the Rust binary's own launcher, not this script's.
    p.add_argument("--dist-timeout", type=float, default=120.0)
    common_flags(p)
    return p


# --optimizer NAME: torch.optim's class and the flags it takes.
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, ["lr", "momentum", "dampening", "weight_decay", "nesterov"]),
    "adam": (torch.optim.Adam, ["lr", "betas", "eps", "weight_decay", "amsgrad"]),
    "adamw": (torch.optim.AdamW, ["lr", "betas", "eps", "weight_decay", "amsgrad"]),
    "rmsprop": (torch.optim.RMSprop, ["lr", "alpha", "eps", "weight_decay", "momentum", "centered"]),
}
# train's lr for SGD: torch.optim.SGD's 1e-3 barely moves this model.
SGD_LR = 0.5


def optimizer_arguments(args):
    """The keyword arguments the chosen optimizer gets: the flags given, and
    for those not given, torch.optim's defaults (read off the class)."""
    cls, takes = OPTIMIZERS[args.optimizer]
    for flag in ["momentum", "dampening", "nesterov", "betas", "eps", "amsgrad", "alpha",
                 "centered"]:
        given = getattr(args, flag)
        if given is not None and given is not False and flag not in takes:
            users = " or ".join(n for n, (_, t) in OPTIMIZERS.items() if flag in t)
            raise UsageError(f"--{flag} is an argument of --optimizer {users}, not of "
                             f"{args.optimizer}")
    defaults = inspect.signature(cls.__init__).parameters
    kwargs = {}
    for name in takes:
        given = getattr(args, name)
        # (`is`: 0 == False, and --eps 0 is a value.)
        kwargs[name] = given if given is not None and given is not False else defaults[name].default
    if args.optimizer == "sgd" and args.lr is None:
        kwargs["lr"] = SGD_LR
    if kwargs.get("nesterov") and (kwargs["momentum"] <= 0 or kwargs["dampening"] != 0):
        raise UsageError(f"--nesterov needs --momentum > 0 and --dampening 0 (got "
                         f"{kwargs['momentum']} and {kwargs['dampening']}), as torch.optim.SGD does")
    return cls, kwargs


# --scheduler NAME: torch.optim.lr_scheduler's class and {flag: argument};
# the arguments not given keep PyTorch's defaults (read off the class), and
# those without one must be given. warmup-cosine is SequentialLR of a
# LinearLR warm-up and a CosineAnnealingLR (built in scheduler_of).
SCHEDULERS = {
    "step": ("StepLR", {"step_size": "step_size", "gamma": "gamma"}),
    "multistep": ("MultiStepLR", {"milestones": "milestones", "gamma": "gamma"}),
    "exponential": ("ExponentialLR", {"gamma": "gamma"}),
    "cosine": ("CosineAnnealingLR", {"t_max": "T_max", "eta_min": "eta_min"}),
    "linear": ("LinearLR", {"start_factor": "start_factor", "end_factor": "end_factor",
                            "total_iters": "total_iters"}),
    "onecycle": ("OneCycleLR", {"max_lr": "max_lr", "pct_start": "pct_start",
                                "anneal_strategy": "anneal_strategy",
                                "no_cycle_momentum": "cycle_momentum",
                                "base_momentum": "base_momentum", "max_momentum": "max_momentum",
                                "div_factor": "div_factor", "final_div_factor": "final_div_factor",
                                "three_phase": "three_phase"}),
    "warmup-cosine": ("SequentialLR", {"warmup_epochs": None, "start_factor": "start_factor",
                                       "t_max": "T_max", "eta_min": "eta_min"}),
    "plateau": ("ReduceLROnPlateau", {"mode": "mode", "factor": "factor", "patience": "patience",
                                      "threshold": "threshold", "threshold_mode": "threshold_mode",
                                      "cooldown": "cooldown", "min_lr": "min_lr"}),
}
SCHEDULER_FLAGS = sorted({f for _, takes in SCHEDULERS.values() for f in takes})
# Where warmup-cosine's arguments' defaults are read from.
WARMUP_COSINE_CLASSES = {"start_factor": "LinearLR", "T_max": "CosineAnnealingLR",
                         "eta_min": "CosineAnnealingLR"}


def milestone_list(s):
    """--milestones 30,80: whole numbers >= 0."""
    return [at_least(0, 64, signed=False)(v) for v in s.split(",")]


def scheduler_of(args, optimizer, steps_per_epoch):
    """The scheduler the flags ask for, or None; refuses what the binary refuses."""
    flag = lambda name: "--" + name.replace("_", "-")
    # (`is`, not `in (None, False)`: 0 == False, and 0 is a value.)
    given = lambda name: getattr(args, name) is not None and getattr(args, name) is not False
    if args.scheduler is None:
        for name in SCHEDULER_FLAGS:
            if given(name):
                raise UsageError(f"{flag(name)} needs --scheduler")
        return None
    cls_name, takes = SCHEDULERS[args.scheduler]
    for name in SCHEDULER_FLAGS:
        if given(name) and name not in takes:
            raise UsageError(f"{flag(name)} is not an argument of --scheduler {args.scheduler}")
    sched = torch.optim.lr_scheduler
    kwargs = {}
    for name, torch_name in takes.items():
        if torch_name is None:
            continue
        if name == "no_cycle_momentum":
            kwargs[torch_name] = not args.no_cycle_momentum
            continue
        value = getattr(args, name)
        if not given(name):
            owner = WARMUP_COSINE_CLASSES.get(torch_name, cls_name)
            default = inspect.signature(getattr(sched, owner).__init__).parameters[torch_name].default
            if default is inspect.Parameter.empty:
                if args.scheduler == "warmup-cosine" and torch_name == "T_max":
                    continue  # the epochs after the warm-up, below
                raise UsageError(f"--scheduler {args.scheduler} needs {flag(name)}")
            value = default
        kwargs[torch_name] = value
    warmup = args.warmup_epochs
    if args.scheduler == "warmup-cosine":
        if warmup is None:
            raise UsageError("--scheduler warmup-cosine needs --warmup-epochs")
        if "T_max" not in kwargs:
            if args.epochs <= warmup:
                raise UsageError(f"--warmup-epochs {warmup} leaves no epoch of --epochs "
                                 f"{args.epochs} for the cosine; give --t-max")
            kwargs["T_max"] = args.epochs - warmup
    if "milestones" in kwargs and any(a >= b for a, b in zip(kwargs["milestones"],
                                                             kwargs["milestones"][1:])):
        raise UsageError("--milestones: milestones must be increasing")
    if "start_factor" in kwargs and not 0 < kwargs["start_factor"] <= 1:
        raise UsageError("--start-factor: start_factor must be in (0, 1]")
    if "end_factor" in kwargs and not 0 <= kwargs["end_factor"] <= 1:
        raise UsageError("--end-factor: end_factor must be in [0, 1]")
    if args.scheduler == "onecycle":
        for name in ["base_momentum", "max_momentum"]:
            if not 0 <= kwargs[name] < 1:
                raise UsageError(f"{flag(name)}: {name} must be in [0, 1)")
        total = args.epochs * steps_per_epoch
        # OneCycleLR divides by each phase's length: PyTorch fails with a
        # ZeroDivisionError at a first phase ending at step 0 or an empty last one.
        p = kwargs["pct_start"]
        ends = ([p * total - 1, 2 * p * total - 2, total - 1] if kwargs["three_phase"]
                else [p * total - 1, total - 1])
        if ends[0] == 0 or ends[-1] == ends[-2]:
            raise UsageError("--pct-start: pct_start must be such that no phase of the cycle is "
                             "empty (not 1, and not 1 / total steps)")
        return sched.OneCycleLR(optimizer, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                                **kwargs)
    if args.scheduler == "warmup-cosine":
        return sched.SequentialLR(optimizer, [
            sched.LinearLR(optimizer, start_factor=kwargs["start_factor"], total_iters=warmup),
            sched.CosineAnnealingLR(optimizer, T_max=kwargs["T_max"], eta_min=kwargs["eta_min"]),
        ], milestones=[warmup])
    if args.scheduler == "plateau" and not 0 < kwargs["factor"] < 1:
        raise UsageError("--factor: factor must be in (0, 1)")
    return getattr(sched, cls_name)(optimizer, **kwargs)


# ------------------------------------------------------- resume files --
# A run's state after an epoch, as train --checkpoint writes it: the model's
# tensors, optimizer.{i}.{buffer} per parameter, rng_state, and the epoch,
# optimizer, scheduler and data as JSON metadata.
RESUME_FORMAT = "cross-entropy-tch-resume"
Resume = namedtuple("Resume", "ck epoch optimizer scheduler rng data buffers scaler")
# --amp NAME: the autocast dtype.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def load_resume(path):
    import safetensors

    ck = load_checkpoint(path, "--resume")
    with open(path, "rb") as f:
        blob = f.read()
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    meta = header.get("__metadata__") or {}
    if meta.get("format") != RESUME_FORMAT:
        raise UsageError(f"--resume {path}: a model checkpoint, not a resume checkpoint (no "
                         "optimizer, scheduler or generator state; train --checkpoint writes "
                         "one); --load starts from its weights")
    try:
        optimizer = json.loads(meta["optimizer"])
        data = json.loads(meta["data"])
        scheduler = json.loads(meta["scheduler"]) if "scheduler" in meta else None
        scaler = json.loads(meta["grad_scaler"]) if "grad_scaler" in meta else None
        epoch = int(meta["epoch"])
    except (KeyError, ValueError) as e:
        raise UsageError(f"--resume {path}: resume state: {e}")
    tensors = dict(safetensors.deserialize(blob))
    if "rng_state" not in tensors:
        raise UsageError(f"--resume {path}: resume state: no rng_state tensor")
    rng = torch.frombuffer(bytearray(tensors["rng_state"]["data"]), dtype=torch.uint8)
    buffers = {}
    for name, t in tensors.items():
        if name.startswith("optimizer."):
            _, i, buf = name.split(".", 2)
            buffers.setdefault(int(i), {})[buf] = f32_tensor(t["data"], t["shape"])
    return Resume(ck, epoch, optimizer, scheduler, rng, data, buffers, scaler)


def check_resume(res, args, data, n):
    """What the binary checks before resuming (training.rs's check_resume)."""
    def differs(what, saved, now):
        raise UsageError(f"--resume {args.resume}: the saved run has {what} {saved}, this one "
                         f"{now}; resume with the same settings")
    if (res.data["rows"], res.data["features"]) != (n, data.x.shape[1]):
        differs("data of", f"{res.data['rows']} rows of {res.data['features']} features",
                f"{n} rows of {data.x.shape[1]} features")
    names = {k: cls.__name__ for k, (cls, _) in OPTIMIZERS.items()}
    if res.optimizer["optimizer"] != args.optimizer:
        differs("optimizer", names.get(res.optimizer["optimizer"], res.optimizer["optimizer"]),
                names[args.optimizer])
    saved = res.scheduler["name"] if res.scheduler else "none"
    now = SCHEDULERS[args.scheduler][0] if args.scheduler else "none"
    if saved != now:
        differs("scheduler", saved, now)
    scaler = {True: "a GradScaler (fp16)", False: "no GradScaler"}
    if (res.scaler is not None) != (args.amp == "fp16"):
        raise UsageError(f"--resume {args.resume}: the saved run has "
                         f"{scaler[res.scaler is not None]}, this one "
                         f"{scaler[args.amp == 'fp16']}; resume with the same settings")
    st = res.scaler
    if st is not None:
        # What the binary loads (amp.rs's GradScalerState::check);
        # GradScaler.load_state_dict checks none of it.
        def bad(what):
            raise UsageError(f"--resume {args.resume}: GradScaler state: {what}")
        scale = st["scale"]
        if not (scale > 0 and math.isfinite(f32(scale) if scale < 3.5e38 else math.inf)):
            bad(f"scale must be a positive finite f32, got {scale}")
        if not (math.isfinite(st["growth_factor"]) and st["growth_factor"] > 1):
            bad("growth_factor must be a finite number > 1")
        if not 0 < st["backoff_factor"] < 1:
            bad("backoff_factor must be in (0, 1)")
        if st["growth_interval"] < 1:
            bad("growth_interval must be at least 1")
        if not 0 <= st["growth_tracker"] <= 2**31 - 1:
            bad(f"growth_tracker must be in [0, 2^31), got {st['growth_tracker']}")
    if res.epoch >= args.epochs:
        raise UsageError(f"--resume {args.resume}: the saved run is at epoch {res.epoch}; "
                         "ask for more epochs than that")


def restore(res, model, optimizer, scheduler, scaler):
    """optimizer.load_state_dict, scheduler.load_state_dict, scaler.load_state_dict,
    torch.set_rng_state."""
    sched = torch.optim.lr_scheduler
    n = len(list(model.parameters()))
    steps = res.optimizer["steps"]
    state = {}
    for i in range(n):
        entry = dict(res.buffers.get(i, {}))
        step = steps[i] if i < len(steps) else None
        if step is not None:
            entry["step"] = torch.tensor(float(step))
        if entry:
            state[i] = entry
    group = dict(optimizer.state_dict()["param_groups"][0])
    group["lr"] = res.optimizer["lr"]
    if "betas" in group:
        group["betas"] = (res.optimizer["momentum"], group["betas"][1])
    elif "momentum" in group:
        group["momentum"] = res.optimizer["momentum"]
    optimizer.load_state_dict({"state": state, "param_groups": [group]})
    if scheduler is not None and res.scheduler is not None:
        st = res.scheduler["state"]
        sd = scheduler.state_dict()
        sd["last_epoch"], sd["_last_lr"] = st["last_epoch"], [st["lr"]]
        if isinstance(scheduler, sched.SequentialLR):
            for sub, e in zip(sd["_schedulers"], st["schedulers_last_epoch"]):
                sub["last_epoch"], sub["base_lrs"] = e, [st["base_lr"]]
        elif isinstance(scheduler, sched.ReduceLROnPlateau):
            sd["best"] = scheduler.mode_worse if st["best"] is None else st["best"]
            sd["num_bad_epochs"], sd["cooldown_counter"] = st["num_bad_epochs"], st["cooldown_counter"]
        elif not isinstance(scheduler, sched.OneCycleLR):
            sd["base_lrs"] = [st["base_lr"]]
        scheduler.load_state_dict(sd)
    if scaler is not None:
        st = res.scaler
        scaler.load_state_dict({"scale": st["scale"], "growth_factor": st["growth_factor"],
                                "backoff_factor": st["backoff_factor"],
                                "growth_interval": st["growth_interval"],
                                "_growth_tracker": st["growth_tracker"]})
    torch.set_rng_state(res.rng)


def save_resume(model, optimizer, scheduler, scaler, stats, args, n, classes, out, epoch):
    from safetensors.torch import save_file

    sched = torch.optim.lr_scheduler
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    osd = optimizer.state_dict()
    steps = []
    for i in range(len(list(model.parameters()))):
        st = osd["state"].get(i, {})
        for name, v in st.items():
            if name != "step" and torch.is_tensor(v):
                tensors[f"optimizer.{i}.{name}"] = v.detach().cpu().float().contiguous()
        steps.append(float(st["step"]) if "step" in st else None)
    tensors["rng_state"] = torch.get_rng_state()
    group = osd["param_groups"][0]
    momentum = group["betas"][0] if "betas" in group else group.get("momentum", 0.0)
    meta = {
        "format": RESUME_FORMAT,
        "epoch": str(epoch),
        "optimizer": json.dumps({"optimizer": args.optimizer, "lr": group["lr"],
                                 "momentum": momentum, "steps": steps}),
        "data": json.dumps({"rows": n, "features": model_features(model), "classes": classes}),
    }
    if scheduler is not None:
        st = {"name": type(scheduler).__name__, "last_epoch": scheduler.last_epoch,
              "lr": scheduler.get_last_lr()[0], "base_lr": 0.0, "schedulers_last_epoch": [],
              "best": None, "num_bad_epochs": 0, "cooldown_counter": 0}
        if isinstance(scheduler, sched.SequentialLR):
            st["schedulers_last_epoch"] = [s.last_epoch for s in scheduler._schedulers]
            st["base_lr"] = scheduler._schedulers[0].base_lrs[0]
        elif isinstance(scheduler, sched.ReduceLROnPlateau):
            st["best"] = scheduler.best if math.isfinite(scheduler.best) else None
            st["num_bad_epochs"] = scheduler.num_bad_epochs
            st["cooldown_counter"] = scheduler.cooldown_counter
        elif not isinstance(scheduler, sched.OneCycleLR):
            st["base_lr"] = scheduler.base_lrs[0]
        meta["scheduler"] = json.dumps({"name": st.pop("name"), "state": st})
    if scaler is not None:
        sd = scaler.state_dict()
        meta["grad_scaler"] = json.dumps({
            "scale": sd["scale"], "growth_factor": sd["growth_factor"],
            "backoff_factor": sd["backoff_factor"], "growth_interval": sd["growth_interval"],
            "growth_tracker": sd["_growth_tracker"]})
    if stats is not None:
        meta["standardize_mean"] = json.dumps(stats[0].tolist())
        meta["standardize_std"] = json.dumps(stats[1].tolist())
    out.commit(lambda path: save_file(tensors, path, metadata=meta))


def model_features(model):
    return next(model.parameters()).shape[1]


def train_main(args):
    if args.clip_norm_type is not None and args.clip_grad_norm is None:
        raise UsageError(f"--clip-norm-type {args.clip_norm_type} needs --clip-grad-norm")
    args.clip_norm_type = args.clip_norm_type or "2"
    optimizer_cls, optimizer_kwargs = optimizer_arguments(args)
    device = apply_common(args)
    data = load_data(args)
    if args.checkpoint_every is not None and args.checkpoint is None:
        raise UsageError("the following required arguments were not provided: "
                         "--checkpoint <FILE.safetensors>")
    if args.resume and args.load:
        raise UsageError("the argument '--resume <FILE.safetensors>' cannot be used with "
                         "'--load <FILE.safetensors>'")
    res = load_resume(args.resume) if args.resume else None
    ck = res.ck if res else (load_checkpoint(args.load) if args.load else None)
    try:
        classes = checkpoint_fits(ck, data) if ck else data.classes
    except UsageError as e:
        raise UsageError(f"--resume {args.resume}: {e}" if res else f"--load {args.load}: {e}")
    hidden = args.hidden if args.hidden is not None else (ck.hidden if ck else [])
    weights = args.class_weights
    if weights is not None and len(weights) != classes:
        raise UsageError(f"--class-weights has {len(weights)} values "
                         f"but the data has {classes} classes")
    n = len(data.y)
    n_test = math.ceil(n * args.test_fraction)
    if n_test == 0 or n_test >= n:
        raise UsageError(f"--test-fraction {args.test_fraction} of {n} rows leaves {n_test} "
                         f"for test and {max(n - n_test, 0)} for training; "
                         "both need at least one")
    if ck and args.hidden is not None and args.hidden != ck.hidden:
        raise UsageError("--hidden: hidden must be the checkpoint's hidden sizes")
    if args.dropout != 0 and not hidden:
        raise UsageError("--dropout: dropout must be 0 without hidden layers "
                         "(MyModel has no Dropout)")
    if (args.init_scale is not None or args.growth_interval is not None) and args.amp != "fp16":
        flag = "--init-scale" if args.init_scale is not None else "--growth-interval"
        raise UsageError(f"{flag} is the GradScaler's, which only --amp fp16 has")
    if res:
        check_resume(res, args, data, n)
    # One rank of a DDP job under torchrun: init_process_group("gloo"), the
    # model wrapped in DDP, each epoch's rows from a DistributedSampler
    # (indexed directly: a DataLoader's iterator would draw a base seed from
    # the default generator every epoch, and move dropout's masks), rank 0
    # prints and writes.
    ddp = "WORLD_SIZE" in os.environ
    rank, world = 0, 1
    if ddp:
        import datetime
        import torch.distributed as dist
        from torch.utils.data.distributed import DistributedSampler
        timeout = datetime.timedelta(seconds=args.dist_timeout)
        if device.type == "cuda":
            # Each rank on its own GPU, NCCL for CUDA tensors (the
            # gradients), gloo for CPU ones (the reduced metrics); `auto`
            # takes the GPUs only where every local rank has one.
            local_rank = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
            if args.device[0] == "auto" and local_world > torch.cuda.device_count():
                device = torch.device("cpu")
            else:
                if device.index:
                    raise UsageError(f"--device cuda:{device.index}: under DDP each rank trains "
                                     "on cuda:LOCAL_RANK; give --device cuda")
                device = torch.device("cuda", local_rank)
                torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timeout)
        rank, world = dist.get_rank(), dist.get_world_size()
    lead = rank == 0
    save = OutputFile(args.save, "--save") if args.save and lead else None
    resume_out = (OutputFile(args.checkpoint, "--checkpoint")
                  if args.checkpoint and lead else None)
    x, y = data.x, data.y
    stats = ck.stats if ck else None

    torch.manual_seed(args.seed)
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

    if ck:
        model = model_of(ck, args.dropout)
    elif hidden:
        model = MLP(x.shape[1], hidden, classes, args.dropout)
    else:
        model = MyModel(x.shape[1], classes)
    model.to(device)
    x_train, y_train = xs[train_idx].to(device), y[train_idx].to(device)
    x_test, y_test = xs[test_idx].to(device), y[test_idx].to(device)
    n_train = len(y_train)
    net = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model)
    optimizer = optimizer_cls(model.parameters(), **optimizer_kwargs)
    n_rank = -(-n_train // world)  # DistributedSampler's num_samples
    batch = min(args.batch_size or n_rank, n_rank)
    steps_per_epoch = -(-n_rank // batch)
    scheduler = scheduler_of(args, optimizer, steps_per_epoch)
    per_batch = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32).to(device)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=args.label_smoothing)
    # with torch.autocast(device.type, dtype): around forward and loss, in
    # the steps and the evaluations; fp16 with a GradScaler.
    autocast = contextlib.nullcontext
    if args.amp:
        def autocast():
            return torch.autocast(device.type, dtype=AMP_DTYPES[args.amp])
    scaler = None
    if args.amp == "fp16":
        kwargs = {k: v for k, v in [("init_scale", args.init_scale),
                                    ("growth_interval", args.growth_interval)] if v is not None}
        scaler = torch.amp.GradScaler(device.type, **kwargs)

    skipped = [0]  # the steps the GradScaler skipped

    def step(xb, yb, epoch, k):
        with autocast():
            outputs = net(xb)
            loss = loss_fn(outputs, yb)
        value = loss.item()
        if not math.isfinite(value):  # as the binary: no step on it, an error
            raise Failure(f"training diverged: the loss is {value} at epoch {epoch} of "
                          f"{args.epochs}, step {k} of {steps_per_epoch}; "
                          f"lower --lr (now {optimizer_kwargs['lr']:e})")
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            if args.clip_grad_norm is not None or args.clip_grad_value is not None:
                scaler.unscale_(optimizer)
        else:
            loss.backward()
        if args.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad_norm,
                                           norm_type=NORM_TYPES[args.clip_norm_type])
        if args.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(model.parameters(), args.clip_grad_value)
        if scaler is not None:
            before = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            # A skipped step (inf/NaN gradients) is the one that backs off.
            skipped[0] += scaler.get_scale() < before
        else:
            optimizer.step()
        if per_batch:
            scheduler.step()

    first_epoch = 1
    if res:
        restore(res, model, optimizer, scheduler, scaler)
        first_epoch = res.epoch + 1
    epochs = []
    start = time.perf_counter()
    for epoch in range(first_epoch, args.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        if ddp:
            sampler = DistributedSampler(range(n_train), num_replicas=world, rank=rank,
                                         shuffle=batch < n_rank, seed=args.seed)
            sampler.set_epoch(epoch - 1)
            order = torch.tensor(list(sampler))
            for k, first in enumerate(range(0, n_rank, batch), 1):
                idx = order[first:first + batch].to(device)
                step(x_train[idx], y_train[idx], epoch, k)
        elif batch >= n_train:
            step(x_train, y_train, epoch, 1)
        else:
            order = torch.randperm(n_train)
            for k, first in enumerate(range(0, n_train, batch), 1):
                idx = order[first:first + batch].to(device)
                step(x_train[idx], y_train[idx], epoch, k)
        if ddp:
            train_loss, train_acc = evaluate_ddp(model, loss_fn, x_train, y_train, rank, world,
                                                 autocast)
            test_loss, test_acc = evaluate_ddp(model, loss_fn, x_test, y_test, rank, world,
                                               autocast)
        else:
            train_loss, train_acc = evaluate(model, loss_fn, x_train, y_train, autocast)
            test_loss, test_acc = evaluate(model, loss_fn, x_test, y_test, autocast)
        if not math.isfinite(train_loss):
            raise Failure(f"training diverged: the train loss is {train_loss} after epoch "
                          f"{epoch} of {args.epochs} (its steps' losses were finite); "
                          f"lower --lr (now {optimizer_kwargs['lr']:e})")
        epochs.append({"epoch": epoch, "lr": lr, "train_loss": train_loss,
                       "train_accuracy": train_acc, "test_loss": test_loss,
                       "test_accuracy": test_acc})
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(test_loss if scheduler.mode == "min" else test_acc)
        elif scheduler is not None and not per_batch:
            scheduler.step()
        if (args.checkpoint_every and epoch % args.checkpoint_every == 0
                and epoch < args.epochs and lead):
            save_resume(model, optimizer, scheduler, scaler, stats, args, n, classes, resume_out, epoch)
        if not args.quiet and not args.json and lead:
            print(f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f} acc {train_acc:.3f} | "
                  f"test loss {test_loss:.4f} acc {test_acc:.3f}")
    seconds = time.perf_counter() - start
    matrix = None
    if ddp:
        matrix = confusion_ddp(model, x_test, y_test, classes, rank, world, autocast)
        del net  # DDP's reducer goes before its process group
        dist.barrier()  # no rank leaves (with rank 0's store) before all are done
        dist.destroy_process_group()
    if not lead:
        return
    if save:
        save_checkpoint(model, stats, save)
    if resume_out:
        save_resume(model, optimizer, scheduler, scaler, stats, args, n, classes, resume_out, args.epochs)
    if args.json:
        doc = {
            "torch_version": torch.__version__.split("+")[0],
            "device": device_name(device),
            "config": {
                "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size,
                "hidden": hidden, "dropout": args.dropout,
                "optimizer": args.optimizer, **optimizer_kwargs,
                "clip_grad_norm": args.clip_grad_norm, "clip_norm_type": args.clip_norm_type,
                "clip_grad_value": args.clip_grad_value,
                "label_smoothing": args.label_smoothing, "class_weights": weights,
                "test_fraction": args.test_fraction, "standardize": not args.no_standardize,
                "fast_step": not args.autograd, "amp": args.amp,
            },
            "data": {"name": data.name, "rows": n, "features": x.shape[1], "classes": classes,
                     "train_rows": n_train, "test_rows": len(y_test)},
            "epochs": epochs,
            "final": epochs[-1],
            "confusion_matrix": matrix or confusion(model, x_test, y_test, classes, autocast),
            "train_seconds": seconds,
            "samples_per_second": n_train * args.epochs / seconds,
            "backward": "autograd",
            "world_size": world,
        }
        if scaler is not None:
            doc["skipped_steps"] = skipped[0]
            doc["grad_scale"] = scaler.get_scale()
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")


# ----------------------------------------------------------------- eval --

def eval_parser():
    p = Parser(prog="reference.py eval")
    data_flags(p)
    p.add_argument("--load", type=path_arg, required=True)
    p.add_argument("--no-standardize", action="store_true")
    common_flags(p)
    return p


def eval_main(args):
    device = apply_common(args)
    data = load_data(args)
    ck = load_checkpoint(args.load)
    try:
        classes = checkpoint_fits(ck, data)
        if not args.no_standardize and ck.stats is None:
            raise UsageError("the checkpoint holds no standardization statistics (a plain "
                             "state_dict?); if the model was trained on raw features, "
                             "pass --no-standardize")
    except UsageError as e:
        raise UsageError(f"--load {args.load}: {e}")
    x, y = data.x, data.y
    xs = x.float() if args.no_standardize else ((x - ck.stats[0]) / ck.stats[1]).float()
    model = model_of(ck)
    model.to(device)
    xs, y = xs.to(device), y.to(device)
    loss, acc = evaluate(model, nn.CrossEntropyLoss(), xs, y)
    doc = {"torch_version": torch.__version__.split("+")[0], "device": device_name(device),
           "data": {"name": data.name, "rows": len(y), "features": x.shape[1],
                    "classes": classes, "train_rows": 0, "test_rows": len(y)},
           "loss": loss, "accuracy": acc, "confusion_matrix": confusion(model, xs, y, classes)}
    if args.json:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"loss {loss:.4f} accuracy {acc:.3f}")


# ---------------------------------------------------------------- bench --

def bench_parser():
    p = Parser(prog="reference.py bench")
    example_flags(p)
    p.add_argument("--warmup", type=whole(64, signed=False), default=100)
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd")
    p.add_argument("--amp", choices=list(AMP_DTYPES), default=None)
    return p


def bench_main(args):
    """The example's step in a timed loop, as `cross-entropy-tch bench` runs it."""
    check_example_sizes(args)
    device = apply_common(args)
    torch.manual_seed(args.seed)
    model, loss_fn, optimizer, inputs, targets = example_setup(args)
    model.to(device)
    inputs, targets = inputs.to(device), targets.to(device)
    if args.optimizer != "sgd":  # torch.optim's defaults but the lr
        optimizer = OPTIMIZERS[args.optimizer][0](model.parameters(), lr=args.lr)

    # --amp: torch.autocast around forward and loss (and the final loss);
    # fp16 with a default GradScaler, as `train --amp` has it.
    autocast = contextlib.nullcontext
    if args.amp:
        def autocast():
            return torch.autocast(device.type, dtype=AMP_DTYPES[args.amp])
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None

    def step():
        with autocast():
            outputs = model(inputs)
            loss = loss_fn(outputs, targets)
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

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
    with torch.no_grad(), autocast():
        final_loss = loss_fn(model(inputs), targets).item()
    doc = {"implementation": "pytorch", "optimizer": type(optimizer).__name__, "amp": args.amp,
           "device": device_name(device),
           "threads": torch.get_num_threads(), "batch_size": args.batch_size,
           "features": args.features, "classes": args.classes,
           "warmup": args.warmup, "steps": args.steps,
           "us_per_step": seconds * 1e6 / args.steps, "final_loss": final_loss}
    if args.json:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"{args.steps} steps: {doc['us_per_step']:.2f} us/step; loss after: {final_loss}")


COMMANDS.update({
    "train": (train_parser, train_main),
    "eval": (eval_parser, eval_main),
    "bench": (bench_parser, bench_main),
})

if __name__ == "__main__":
    main()
