"""Modality-level Shapley: encode-once (the explanation split) vs whole-model calls (issue 13, item 2).

Three ways to compute the same exact modality Shapley values (all 2^M coalitions) of B samples:

* ``split``   ``modality_shapley(sf, batch, method="exact")`` with the explanation split: each modality is
              encoded once per sample (+ one zero row), fusion + head run over the 2^M coalitions;
* ``batched`` the same call with ``sf.use_split = False`` (before this change): the batch is stacked once per
              coalition and the whole model runs on the B·2^M rows, in calls of ≤ 512 rows;
* ``loop``    a loop of whole-model calls, one per coalition (each on the B samples with that coalition's mask);
* ``loop1``   a loop of whole-model calls, one per (sample, coalition) (--loop1; one row per call).

All give the same values (checked, max |diff| printed). Models (untrained: timing does not depend on the weights):
``demo``: cli.DEMO_CONFIG's encoders (image 1x28x28 cnn2d 32/64 ch -> 64, audio 40x13 cnn1d 32/64 ch k5 -> 64,
mlp head 64, concat); ``four``: the same plus a second image (cnn2d) and a 64-d vector (mlp): M = 4; ``five``:
audio, image, a 64-d vector (mlp), a 30x16 sensor sequence (gru, hidden 64) and a 20x32 feature sequence
(transformer, 2 layers, dim 64, 4 heads): M = 5; ``six``: ``five`` plus a 1x4x16x16 clip (cnn3d 8/16 ch): M = 6.
The ratio of ``loop`` (one call per coalition, each encoder run 2^M times a sample) to ``split`` (each encoder once
per sample, plus one zero row) is bounded by about 2^M (the encoders' share of the cost): 4, 16, 32, 64.

Protocol (issue 13): set-up outside the timed region; every variant warmed up; --repeats rounds, each round runs
every variant once in a rotated order (interleaved in one process); reported: median seconds and IQR per variant,
median and IQR of the per-round ratios; torch threads stated; raw timings as a pyperf BenchmarkSuite (--json).

Run:  cd /work/main && .venv/bin/python benchmarks/explain_modality_level.py --json benchmarks/results/explain_modality_level.json
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from mmfuse.batch import MultimodalBatch
from mmfuse.explain import make_score_fn, modality_shapley
from mmfuse.explain.estimators import all_coalitions, exact_from_values
from mmfuse.explain.scoring import call_score
from mmfuse.models.build import build_model

DEMO_ENCODERS = {
    "image": {"name": "cnn2d", "options": {"channels": [32, 64], "output_dim": 64}},
    "audio": {"name": "cnn1d", "options": {"channels": [32, 64], "output_dim": 64, "kernel_size": 5}},
}
EXTRA_ENCODERS = {
    "image2": DEMO_ENCODERS["image"],
    "vector": {"name": "mlp", "options": {"output_dim": 64}},
    # a sensor sequence (30 steps x 16 channels) through a GRU
    "motion": {"name": "gru", "options": {"hidden": 64, "output_dim": 64}},
    # a feature sequence (20 steps x 32) through a 2-layer transformer
    "frames": {"name": "transformer", "options": {"dim": 64, "layers": 2, "heads": 4, "dropout": 0.0,
                                                  "output_dim": 64}},
    # a short clip (1 x 4 x 16 x 16) through a 3-D CNN
    "video": {"name": "cnn3d", "options": {"channels": [8, 16], "output_dim": 64}},
}
SHAPES = {"image": (1, 28, 28), "audio": (40, 13), "image2": (1, 28, 28), "vector": (64,), "motion": (30, 16),
          "frames": (20, 32), "video": (1, 4, 16, 16)}
MODELS = {
    "demo": ["audio", "image"],
    "four": ["audio", "image", "image2", "vector"],
    "five": ["audio", "image", "vector", "motion", "frames"],
    "six": ["audio", "image", "vector", "motion", "frames", "video"],
}


def make_model(kind: str):
    names = MODELS[kind]
    enc = {m: DEMO_ENCODERS.get(m, EXTRA_ENCODERS.get(m)) for m in names}
    shapes = {m: SHAPES[m] for m in names}
    torch.manual_seed(0)
    model = build_model({"family": "fusion", "strategy": "feature", "fusion": {"name": "concat"}, "encoders": enc,
                         "head": {"name": "mlp", "options": {"hidden": [64], "dropout": 0.1}}}, shapes, 10, "multiclass")
    return model.eval(), shapes


def make_batch(shapes, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.rand((B,) + s, generator=g) for m, s in shapes.items()}
    mask = {m: torch.ones(B, dtype=torch.bool) for m in shapes}
    first = sorted(shapes)[0]
    mask[first][::4] = False  # some samples lack a modality
    inputs[first][::4] = 0
    return MultimodalBatch(inputs, mask)


def run_split(sf, batch):
    sf.use_split = True
    return modality_shapley(sf, batch, method="exact").values


def run_batched(sf, batch):
    sf.use_split = False
    try:
        return modality_shapley(sf, batch, method="exact").values
    finally:
        sf.use_split = True


def run_loop(sf, batch):
    players = batch.modalities
    coal = all_coalitions(len(players))
    classes = sf.classes(batch)
    v = torch.stack([call_score(sf, batch.with_mask({m: c[i].expand(batch.batch_size) for i, m in enumerate(players)}),
                                classes) for c in coal])
    return exact_from_values(v, len(players)).transpose(0, 1)


def run_loop1(sf, batch):
    players = batch.modalities
    coal = all_coalitions(len(players))
    classes = sf.classes(batch)
    out = []
    for b in range(batch.batch_size):
        one = batch.select([b])
        v = torch.stack([call_score(sf, one.with_mask({m: c[i].view(1) for i, m in enumerate(players)}), classes[b:b + 1])
                         for c in coal])
        out.append(exact_from_values(v, len(players)).transpose(0, 1))
    return torch.cat(out)


def q(xs, p):
    return float(np.quantile(np.asarray(xs, dtype=float), p))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="demo,four,five,six")
    ap.add_argument("--loop1", action="store_true", help="also time one whole-model call per (sample, coalition)")
    ap.add_argument("--json", default=None, help="write the raw timings as a pyperf BenchmarkSuite here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import pyperf

    variants = {"split": run_split, "batched": run_batched, "loop": run_loop}
    if args.loop1:
        variants["loop1"] = run_loop1
    benches = []
    print(f"torch threads {torch.get_num_threads()}, B = {args.samples} samples, {args.repeats} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for kind in args.models.split(","):
        model, shapes = make_model(kind)
        batch = make_batch(shapes, args.samples)
        sf = make_score_fn(model, "predicted")
        ref = run_split(sf, batch)
        for name, fn in variants.items():  # warm-up + agreement
            diff = float((fn(sf, batch) - ref).abs().max())
            print(f"  {kind}: {name:<8} max |phi - phi_split| = {diff:.1e}")
        names = list(variants)
        times = {n: [] for n in names}
        for r in range(args.repeats):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                t = time.perf_counter()
                variants[n](sf, batch)
                times[n].append(time.perf_counter() - t)
        M = len(shapes)
        print(f"\nmodel {kind}: M = {M} modalities, 2^M = {2 ** M} coalitions, B = {args.samples}")
        print(f"  {'variant':<8} {'median s':>9} {'IQR':>17}   ratio variant / split per round: median (IQR)")
        for n in names:
            rr = [a / b for a, b in zip(times[n], times["split"])]
            print(f"  {n:<8} {np.median(times[n]):9.4f} {q(times[n], .25):8.4f}-{q(times[n], .75):8.4f}   "
                  f"{np.median(rr):6.2f}x ({q(rr, .25):.2f}-{q(rr, .75):.2f})")
            benches.append(pyperf.Benchmark([pyperf.Run(times[n], metadata={"name": f"{kind} {n}", "unit": "second",
                                                                             "loops": 1})]))
    if args.json:
        pyperf.BenchmarkSuite(benches).dump(args.json, replace=True)
        print(f"raw timings (pyperf): {args.json}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
