"""A complete PyTorch training script: data, split, standardization, an MLP
with dropout, AdamW, OneCycleLR, gradient clipping, model.train() /
model.eval(), torch.no_grad(), and a checkpoint to resume from.
examples/train_loop.rs is the same program on cross-entropy-tch, each line
of this one quoted above its Rust, and prints the same numbers, bit for bit.

    .venv/bin/python examples/train_loop.py [--stop-after N] [--checkpoint FILE]

With --checkpoint FILE the run saves its whole state there after every epoch
and, when the file exists at start, resumes from it: a run stopped with
--stop-after 10 and run again finishes exactly as one uninterrupted run.
"""
import argparse, csv, os
import torch
from torch import nn

EPOCHS, BATCH, HIDDEN = 20, 16, 32


class MLP(nn.Module):
    def __init__(self, features, hidden, classes, dropout):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(),
                                    nn.Dropout(dropout), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.layers(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stop-after", type=int, default=EPOCHS)
    p.add_argument("--checkpoint", default=None)
    args = p.parse_args()

    rows = list(csv.reader(open("data/wine_data.csv")))[1:]
    x = torch.tensor([[float(v) for v in r[:-1]] for r in rows], dtype=torch.float64)
    y = torch.tensor([int(r[-1]) for r in rows])

    torch.manual_seed(0)
    perm = torch.randperm(len(y))
    test_idx, train_idx = perm[:36], perm[36:]
    mean, std = x[train_idx].mean(0), x[train_idx].std(0, correction=0)
    x = ((x - mean) / std).float()
    x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]

    model = MLP(x.shape[1], HIDDEN, 3, dropout=0.2)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)
    steps = -(-len(y_train) // BATCH)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, epochs=EPOCHS,
                                                    steps_per_epoch=steps)
    start = 0
    if args.checkpoint and os.path.exists(args.checkpoint):
        ck = torch.load(args.checkpoint, weights_only=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
        start = ck["epoch"]

    for epoch in range(start + 1, min(args.stop_after, EPOCHS) + 1):
        model.train()
        order = torch.randperm(len(y_train))
        for first in range(0, len(y_train), BATCH):
            idx = order[first:first + BATCH]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_test)
            test_loss = loss_fn(logits, y_test).item()
            accuracy = (logits.argmax(1) == y_test).float().mean().item()
        print(f"epoch {epoch}: loss {loss.item()!r} test loss {test_loss!r} "
              f"accuracy {accuracy!r} lr {scheduler.get_last_lr()[0]!r}")
        if args.checkpoint:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                        "epoch": epoch}, args.checkpoint)


if __name__ == "__main__":
    main()
