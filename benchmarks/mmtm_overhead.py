"""Extra forward+backward time that MMTM adds to the two-stream AV-MNIST network.

Network (the demo's sizes): image (1, 28, 28) -> ``cnn2d`` (stages 16, 32 channels), audio (40, 13)
-> ``cnn1d`` (stages 32, 64 channels), one linear head per stream, summed logits, batch 128.
``--width k`` multiplies every stage's channels by k, to show how the ratio shrinks as the encoders
grow. The block's cost grows linearly in the channels, the convolutions' cost quadratically.
Baseline: the same ``IntermediateFusionModel`` with no fusion point (late fusion). "MMTM x2": one
block after each stage pair (``[{"image": 0, "audio": 0}, {"image": 1, "audio": 1}]``, the placement of
``benchmarks/mmtm_experiments.py``). "MMTM x1": one block after the last stages only.

Both models are timed in the same process, interleaved (A, B, A, B, ...) so that load changes on the
shared machine affect both alike. The result is the ratio of the medians of the per-repeat times
(forward + backward + zero_grad), minus 1.

    PYTHONPATH=src .venv/bin/python benchmarks/mmtm_overhead.py [--repeats 40] [--threads 1] [--width 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmfuse.batch import MultimodalBatch
from mmfuse.models.intermediate import IntermediateFusionModel
from mmfuse.registry import ENCODERS
import mmfuse.encoders  # noqa: F401  (registers cnn1d / cnn2d)


def build(points, seed=0, width=1):
    torch.manual_seed(seed)
    enc = {
        "image": ENCODERS.create("cnn2d", input_shape=(1, 28, 28), channels=(16 * width, 32 * width)),
        "audio": ENCODERS.create("cnn1d", input_shape=(40, 13), channels=(32 * width, 64 * width)),
    }
    return IntermediateFusionModel(enc, points, num_outputs=10)


def step(model, batch):
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    out = model(batch)
    torch.nn.functional.cross_entropy(out.logits, batch.target).backward()
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, default=1, help="multiply every stage's channels (1 = the demo's encoders)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    B = args.batch
    batch = MultimodalBatch(
        {"image": torch.rand(B, 1, 28, 28, generator=g), "audio": torch.randn(B, 40, 13, generator=g)},
        {"image": torch.ones(B, dtype=torch.bool), "audio": torch.ones(B, dtype=torch.bool)},
        torch.randint(0, 10, (B,), generator=g),
    )
    models = {
        "late (no MMTM)": build([], width=args.width),
        "MMTM x2": build([{"image": 0, "audio": 0}, {"image": 1, "audio": 1}], width=args.width),
        "MMTM x1": build([{"image": 1, "audio": 1}], width=args.width),
    }
    base = "late (no MMTM)"
    extra = {k: sum(p.numel() for p in m.blocks.parameters()) for k, m in models.items() if k != base}
    base_n = sum(p.numel() for p in models[base].parameters())
    for m in models.values():  # warm-up
        for _ in range(3):
            step(m, batch)
    times = {k: [] for k in models}
    for _ in range(args.repeats):
        for k, m in models.items():
            times[k].append(step(m, batch))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"batch {B}, threads {args.threads}, width x{args.width}, {args.repeats} interleaved repeats; "
          f"base network {base_n} parameters")
    print(f"  {base:16s} median fwd+bwd {1000 * med[base]:8.2f} ms")
    for k in extra:
        ratios = [b / a for a, b in zip(times[base], times[k])]
        print(
            f"  {k:16s} median fwd+bwd {1000 * med[k]:8.2f} ms  (+{extra[k]} params)  overhead: ratio of medians "
            f"{100 * (med[k] / med[base] - 1):+.1f} %, median of paired ratios {100 * (statistics.median(ratios) - 1):+.1f} %"
        )


if __name__ == "__main__":
    main()
