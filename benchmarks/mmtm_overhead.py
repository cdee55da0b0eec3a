"""Extra forward+backward time that MMTM adds to a two-stream network, default placement vs. none.

Two configurations (``--sizes``):

* ``realistic``: two ``cnn2d`` streams on (3, 112, 112) inputs with stages of 64 / 128 / 256 channels
  at 56 / 28 / 14 pixels (stride-2 convolutions), batch 16 (issue 13's "realistic sizes").
* ``demo``: the AV-MNIST demo network: image (1, 28, 28) -> ``cnn2d`` (16, 32 channels), audio
  (40, 13) -> ``cnn1d`` (32, 64 channels), batch 128. Both streams have two stages, so the default
  (top two stages) is a block after every stage here.

Variants, all ``IntermediateFusionModel`` with one linear head per stream and summed logits:

* ``none``: no fusion point (late fusion): the baseline.
* ``default``: ``fusion_points="auto"``, the library's default: one block after each of the top two
  stages, aligned from the end.
* ``every``: one block after every stage (the old default), for comparison.

Protocol (benchmarks/README.md): every variant is built, then warmed up (``--warmup`` steps each);
the timed region is one training step (``zero_grad`` + forward + cross-entropy + backward), with
set-up and imports outside it. The variants are interleaved in one process, their order rotated round by
round (none, default, every / default, every, none / every, none, default / ...), so that load changes on the
shared machine and any position effect (caches, allocator state left by the previous variant) hit all alike. We report the median
and IQR of each variant's step time and of the *paired* overhead ``t_variant / t_none - 1`` (each
variant's step against the baseline step of the same round), and the thread count, by wall clock
and by process CPU time (with one thread the CPU time excludes waiting for a core, so it is the
steadier figure on a shared, loaded machine; the PASS/FAIL line uses it), with a seeded percentile-bootstrap
95 % confidence interval of each paired median (how far the median could move with another draw of rounds: the
verdict says whether the whole interval is below 10 %), and the 1-min load average at start and end. The raw wall AND CPU
timings go through pyperf (``--output FILE.json`` writes a pyperf BenchmarkSuite with ``mmtm-<sizes>-<variant>``
(wall) and ``mmtm-<sizes>-<variant>-cpu`` benchmarks; ``python -m pyperf stats FILE.json`` / ``compare_to`` read
it); no file is written without ``--output``.

    cd /work/main && .venv/bin/python benchmarks/mmtm_overhead.py --sizes realistic --repeats 60 [--output FILE.json]
    cd /work/main && .venv/bin/python benchmarks/mmtm_overhead.py --sizes demo --repeats 60 [--output FILE.json]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import time

import pyperf
import torch

import mmfuse.encoders  # noqa: F401  (registers cnn1d / cnn2d)
from mmfuse.batch import MultimodalBatch
from mmfuse.models.intermediate import IntermediateFusionModel
from mmfuse.registry import ENCODERS


def quantiles(xs):
    """(median, q1, q3, min, max) of a list of numbers."""
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return statistics.median(xs), q[0], q[2], min(xs), max(xs)


def median_ci(xs, level=0.95, resamples=2000, seed=0):
    """Percentile-bootstrap confidence interval of the median of ``xs`` (seeded: the same numbers give the same
    interval). It says how far the paired median itself could move with another draw of rounds."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(resamples))
    lo = meds[int((1 - level) / 2 * resamples)]
    hi = meds[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return lo, hi


def encoders(sizes):
    if sizes == "realistic":
        return {
            "rgb": ENCODERS.create("cnn2d", input_shape=(3, 112, 112), channels=(64, 128, 256)),
            "depth": ENCODERS.create("cnn2d", input_shape=(3, 112, 112), channels=(64, 128, 256)),
        }
    return {
        "image": ENCODERS.create("cnn2d", input_shape=(1, 28, 28), channels=(16, 32)),
        "audio": ENCODERS.create("cnn1d", input_shape=(40, 13), channels=(32, 64)),
    }


def make_batch(sizes, batch):
    g = torch.Generator().manual_seed(0)
    if sizes == "realistic":
        inputs = {m: torch.randn(batch, 3, 112, 112, generator=g) for m in ("rgb", "depth")}
    else:
        inputs = {"image": torch.rand(batch, 1, 28, 28, generator=g), "audio": torch.randn(batch, 40, 13, generator=g)}
    mask = {m: torch.ones(batch, dtype=torch.bool) for m in inputs}
    return MultimodalBatch(inputs, mask, torch.randint(0, 10, (batch,), generator=g))


def build(sizes, points):
    torch.manual_seed(0)  # identical encoder / head weights in every variant
    return IntermediateFusionModel(encoders(sizes), points, num_outputs=10)


def step(model, batch):
    """(wall, CPU) seconds of one training step (CPU = process time: with 1 thread, the steadier clock
    on a loaded machine, since time spent waiting for a core does not count)."""
    t, c = time.perf_counter(), time.process_time()
    model.zero_grad(set_to_none=True)
    out = model(batch)
    torch.nn.functional.cross_entropy(out.logits, batch.target).backward()
    return time.perf_counter() - t, time.process_time() - c


def timed_block_calls():
    """Wrap the fused MMTM block's forward / backward with CPU-time counters (``--breakdown`` only: the figure
    of record runs the library untouched). Returns the dict the counters add to (seconds)."""
    from mmfuse.interaction import mmtm

    acc = {"forward": 0.0, "backward": 0.0}
    fwd, bwd = mmtm._FusedMMTM.forward, mmtm._FusedMMTM.backward

    def forward(ctx, *a):
        t = time.thread_time()
        try:
            return fwd(ctx, *a)
        finally:
            acc["forward"] += time.thread_time() - t

    def backward(ctx, *a):
        t = time.thread_time()
        try:
            return bwd(ctx, *a)
        finally:
            acc["backward"] += time.thread_time() - t

    mmtm._FusedMMTM.forward, mmtm._FusedMMTM.backward = staticmethod(forward), staticmethod(backward)
    return acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", choices=("realistic", "demo"), default="realistic")
    ap.add_argument("--repeats", type=int, default=30, help="interleaved rounds (one step of every variant each)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps of every variant before timing")
    ap.add_argument("--batch", type=int, default=None, help="default: 16 (realistic) / 128 (demo)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default=None, help="write the timings as a pyperf BenchmarkSuite JSON file")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the blocks' own forward / backward inside each step (wraps the block: diagnostic only)")
    args = ap.parse_args(argv)
    block_time = timed_block_calls() if args.breakdown else None
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    B = args.batch or (16 if args.sizes == "realistic" else 128)
    batch = make_batch(args.sizes, B)
    n_stages = len(next(iter(encoders(args.sizes).values())).stages)
    streams = sorted(batch.inputs)
    models = {
        "none": build(args.sizes, []),
        "default": build(args.sizes, "auto"),
        "every": build(args.sizes, [{m: i for m in streams} for i in range(n_stages)]),
    }
    for m in models.values():
        m.train()
        for _ in range(args.warmup):
            step(m, batch)
    times = {k: [] for k in models}
    cpu = {k: [] for k in models}
    sys_faults = {k: [] for k in models}  # (system CPU seconds, minor page faults) per step: the allocator's share
    blocks = {k: [] for k in models}
    names = list(models)
    for r in range(args.repeats):
        j = r % len(names)
        for k in names[j:] + names[:j]:  # rotated order: every variant runs first, second, last equally often
            if block_time is not None:
                block_time["forward"] = block_time["backward"] = 0.0
            ru = resource.getrusage(resource.RUSAGE_SELF)
            w, c = step(models[k], batch)
            ru2 = resource.getrusage(resource.RUSAGE_SELF)
            times[k].append(w)
            cpu[k].append(c)
            sys_faults[k].append((ru2.ru_stime - ru.ru_stime, ru2.ru_minflt - ru.ru_minflt))
            if block_time is not None:
                blocks[k].append((block_time["forward"], block_time["backward"]))

    load_end = os.getloadavg()
    load = f"{load_start[0]:.2f} -> {load_end[0]:.2f}"
    meta = {"threads": str(args.threads), "sizes": args.sizes, "batch": str(B), "loadavg_1min": load}
    suite = pyperf.BenchmarkSuite([
        pyperf.Benchmark([pyperf.Run(v, metadata={"name": f"mmtm-{args.sizes}-{k}{suffix}", **meta},
                                     collect_metadata=False)])
        for suffix, tt in (("", times), ("-cpu", cpu)) for k, v in tt.items()
    ])
    if args.output:
        suite.dump(args.output, replace=True)
    print(f"MMTM overhead, sizes={args.sizes}, batch {B}, threads {args.threads}, {args.repeats} interleaved rounds "
          f"after {args.warmup} warm-up steps each, order rotated per round (torch {torch.__version__}, pyperf {pyperf.__version__}); "
          f"1-min load average {load}")
    verdict = None
    for k, m in models.items():
        extra = sum(p.numel() for p in m.blocks.parameters())
        print(f"  {k:8s} points={m.fusion_points!s:50.50s} +{extra:6d} params")
        for clock, tt in (("wall", times), ("cpu", cpu)):
            med, q1, q3, lo, hi = quantiles(tt[k])
            line = (f"           {clock:4s} step median {1000 * med:8.2f} ms "
                    f"(IQR {1000 * q1:.2f}-{1000 * q3:.2f}, min-max {1000 * lo:.2f}-{1000 * hi:.2f})")
            if k != "none":
                r = [100 * (b / a - 1) for a, b in zip(tt["none"], tt[k])]
                rm, r1, r3, _, _ = quantiles(r)
                c1, c2 = median_ci(r)
                line += (f"; overhead vs none: paired median {rm:+.1f} % (IQR {r1:+.1f} .. {r3:+.1f} %; "
                         f"95 % CI of the median {c1:+.1f} .. {c2:+.1f} %)")
                if k == "default" and clock == "cpu":
                    verdict, verdict_ci = rm, (c1, c2)
            print(line)
        st = statistics.median(v[0] for v in sys_faults[k])
        flt = statistics.median(v[1] for v in sys_faults[k])
        line = f"           of which system time (page faults etc.) median {1000 * st:.2f} ms, {flt:.0f} minor page faults per step"
        if k != "none":
            d = [1000 * (b[0] - a[0]) for a, b in zip(sys_faults["none"], sys_faults[k])]
            line += f"; paired system-time difference vs none median {statistics.median(d):+.2f} ms"
        print(line)
        if blocks[k] and any(f or b for f, b in blocks[k]):
            print(f"           blocks' own CPU time per step (inside the step): forward median "
                  f"{1000 * statistics.median(f for f, _ in blocks[k]):.2f} ms, backward median "
                  f"{1000 * statistics.median(b for _, b in blocks[k]):.2f} ms")
    if verdict is not None:
        c1, c2 = verdict_ci
        sure = ("the whole 95 % CI is below 10 %" if c2 < 10 else "the whole 95 % CI is above 10 %" if c1 >= 10
                else "the 95 % CI straddles 10 %: not conclusive, run more rounds or on a quieter machine")
        print(f"{'PASS' if verdict < 10 else 'FAIL'}: default placement overhead {verdict:+.1f} % (paired median, CPU time; "
              f"95 % CI {c1:+.1f} .. {c2:+.1f} %) vs the target < 10 %; {sure}")
    return verdict


if __name__ == "__main__":
    v = main()
    raise SystemExit(0 if v is None or v < 10 else 1)
