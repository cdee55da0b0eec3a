"""Training throughput: mmfuse (`fit`, Lightning) versus a hand-written PyTorch loop.

Same model (built by `build_model` from the demo config, concat fusion), same data (AV-MNIST hard
train/val splits), same batch size, optimiser and epochs; both validate once per epoch. The hand
loop indexes pre-stacked tensors (the fastest plain loop there is: no per-sample collate). Runs are
interleaved (hand, mmfuse, hand, mmfuse, ...) and the ratio of median samples/second is reported.
Time is this process's CPU time (one torch thread), so other load on the machine does not skew
the ratio; it covers the whole call (model build, Trainer set-up, training and validation).

    .venv/bin/python benchmarks/training_throughput.py [--repeats 3] [--epochs 3] [--threads 1]

Target: ratio (mmfuse / hand loop) >= 0.85.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from mmfuse.cli import DEMO_CONFIG
from mmfuse.config import parse_config
from mmfuse.models import build_model
from mmfuse.training import fit
from mmfuse.training.fit import load_data


def hand_loop(cfg, data, epochs: int) -> float:
    t0 = time.process_time()
    torch.manual_seed(cfg.seed)
    tr, va = data["train"], data["val"]
    model = build_model(cfg.model, tr.shapes, tr.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
    full, val = tr.batch(), va.batch()  # pre-stacked MultimodalBatch of the whole split
    n, bs = len(tr), cfg.data.batch_size
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            b = full.select(perm[i:i + bs])
            loss = F.cross_entropy(model(b).logits, b.target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(va), cfg.data.eval_batch_size):
                model(val.select(slice(i, i + cfg.data.eval_batch_size)))
    return epochs * n / (time.process_time() - t0)


def mmfuse_fit(cfg, data, epochs: int) -> float:
    t0 = time.process_time()
    c = parse_config(cfg.model_dump(), [f"training.max_epochs={epochs}", "training.progress=false"])
    fit(c, data, save=False, progress=False, evaluate_patterns=False)
    return epochs * len(data["train"]) / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = parse_config(json.loads(json.dumps(DEMO_CONFIG)), ["model.fusion.name=concat"])
    data = load_data(cfg)
    hand_loop(cfg, data, 1)  # warm-up
    hand, ours = [], []
    for r in range(args.repeats):
        hand.append(hand_loop(cfg, data, args.epochs))
        ours.append(mmfuse_fit(cfg, data, args.epochs))
        print(f"repeat {r}: hand {hand[-1]:.0f} samples/s, mmfuse {ours[-1]:.0f} samples/s")
    ratio = statistics.median(ours) / statistics.median(hand)
    print(f"median: hand {statistics.median(hand):.0f} samples/s, mmfuse {statistics.median(ours):.0f} samples/s, "
          f"ratio mmfuse/hand = {ratio:.3f} (target >= 0.85)")


if __name__ == "__main__":
    main()
