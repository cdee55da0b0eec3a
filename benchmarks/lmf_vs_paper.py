"""mmfuse's ``low_rank`` fusion against a reference LMF written from the paper, side by side.

Reference: Liu, Shen, Lakshminarasimhan, Liang, Zadeh, Morency, "Efficient Low-rank Multimodal
Fusion with Modality-Specific Factors", ACL 2018. Written here from the paper's equations (not from
any released code): every unimodal vector gets a constant 1, ``z~_m = [1; z_m]``; the weight of the
linear map on the tensor ``Z = z~_1 (x) ... (x) z~_M`` is a weighted rank-R CP decomposition
``W = sum_i lambda_i (x)_m w_m^(i)`` with ``w_m^(i)`` of shape ``(D_m + 1, H)``, so that

    h = W . Z + b = sum_i lambda_i  prod_m (z~_m . w_m^(i))  + b         (element-wise product over m)

computed without building Z. The constant goes first here (the paper only says it is appended) so
that the factor layout is mmfuse's ``factors[m]: [R, D_m + 1, H]`` and the same values can be set.

Sizes: two modalities of width 32, rank 4, output 64 (16,964 parameters, as in issue 13), batches
64 and 512. Both modules get identical factor, rank-weight and bias values; the script first checks
that the outputs agree, then times ``forward`` of both under ``torch.no_grad()`` and with autograd
(forward + backward of ``out.sum()``), interleaved in one process (A, B, A, B, ...) after a
warm-up, each sample being the mean of ``--inner`` calls. mmfuse is called the way a model calls it:
``op(embeddings, mask)`` with an all-True mask (the fast path), and ``--absent`` times a batch with
one absent row in each modality (the masked path) for comparison. Reports the medians, IQRs and
the paired ratio mmfuse / reference (< 1: mmfuse faster), with the thread count, by wall clock and
by this thread's CPU time (on a shared machine the CPU time is the steadier of the two). ``--output FILE``
writes both as a pyperf BenchmarkSuite (``lmf-b<batch>-<mode>-<side>`` wall, ``...-cpu`` CPU, seconds per call);
no file is written without it.

    PYTHONPATH=src .venv/bin/python benchmarks/lmf_vs_paper.py [--repeats 200] [--inner 20] [--threads 1] [--output lmf.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyperf
import torch
from torch import nn

from mmfuse.fusion import create_fusion


class PaperLMF(nn.Module):
    """LMF as the paper writes it: ``h = sum_i lambda_i prod_m ([1; z_m] . w_m^(i)) + b``."""

    def __init__(self, dims: dict[str, int], rank: int, out: int):
        super().__init__()
        self.names = sorted(dims)
        self.factors = nn.ParameterList([nn.Parameter(torch.randn(rank, dims[m] + 1, out)) for m in self.names])
        self.lam = nn.Parameter(torch.randn(rank))
        self.b = nn.Parameter(torch.zeros(out))

    def forward(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        prod = None
        for m, w in zip(self.names, self.factors):
            x = z[m]
            zt = torch.cat([torch.ones(x.shape[0], 1, dtype=x.dtype), x], dim=1)  # [B, D+1]
            f = torch.matmul(zt, w)  # [R, B, H]: z~_m . w_m^(i) for every rank i
            prod = f if prod is None else prod * f
        return (self.lam.view(-1, 1, 1) * prod).sum(0) + self.b  # [B, H]


def quantiles(xs):
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return statistics.median(xs), q[0], q[2]


def timed(fn, inner):
    """(wall, CPU) seconds per call, the mean over ``inner`` calls (CPU: this thread's time)."""
    t, c = time.perf_counter(), time.thread_time()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner, (time.thread_time() - c) / inner


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--inner", type=int, default=20, help="calls per timed sample")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--absent", action="store_true", help="also time mmfuse's masked path (one absent row per modality)")
    ap.add_argument("--output", default=None, help="write the timings as a pyperf BenchmarkSuite JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dims, rank, out = {"audio": 32, "image": 32}, 4, 64

    torch.manual_seed(0)
    ours = create_fusion("low_rank", dims, rank=rank, output_dim=out)
    ref = PaperLMF(dims, rank, out)
    with torch.no_grad():  # identical values
        for m, w in zip(ref.names, ref.factors):
            w.copy_(ours.factors[m])
        ref.lam.copy_(ours.rank_weights[0])
        ref.b.copy_(torch.randn(out))
        ours.bias.copy_(ref.b)
    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == sum(p.numel() for p in ref.parameters())

    print(f"low_rank vs paper LMF: dims {dims}, rank {rank}, output {out} ({n_params} parameters), threads "
          f"{args.threads}, {args.repeats} interleaved samples of {args.inner} calls after {args.warmup} warm-up calls "
          f"(torch {torch.__version__}, pyperf {pyperf.__version__})")
    benches = []
    verdicts = []
    for B in args.batches:
        g = torch.Generator().manual_seed(B)
        z = {m: torch.randn(B, d, generator=g) for m, d in dims.items()}
        full = {m: torch.ones(B, dtype=torch.bool) for m in dims}
        part = {m: torch.ones(B, dtype=torch.bool) for m in dims}
        part["audio"][0] = False
        part["image"][1] = False
        with torch.no_grad():
            a, b = ours(z, full), ref(z)
        diff = (a - b).abs().max().item()
        print(f"  batch {B}: max |mmfuse - paper| = {diff:.3g} (outputs {'agree' if diff <= 1e-5 * b.abs().max().item() else 'DIFFER'})")
        zg = {m: v.clone().requires_grad_(True) for m, v in z.items()}
        cases = {
            "no_grad": {
                "paper": lambda: ref(z),
                "mmfuse": lambda: ours(z, full),
                **({"mmfuse-absent": lambda: ours(z, part)} if args.absent else {}),
            },
            "fwd+bwd": {
                "paper": lambda: ref(zg).sum().backward(),
                "mmfuse": lambda: ours(zg, full).sum().backward(),
                **({"mmfuse-absent": lambda: ours(zg, part).sum().backward()} if args.absent else {}),
            },
        }
        for mode, fns in cases.items():
            grad = mode != "no_grad"
            with torch.set_grad_enabled(grad):
                for fn in fns.values():
                    for _ in range(args.warmup):
                        fn()
                wall = {k: [] for k in fns}
                cpu = {k: [] for k in fns}
                for _ in range(args.repeats):
                    for k, fn in fns.items():
                        w, c = timed(fn, args.inner)
                        wall[k].append(w)
                        cpu[k].append(c)
            for suffix, times in (("", wall), ("-cpu", cpu)):  # wall and this thread's CPU time per call
                for k, v in times.items():
                    benches.append(pyperf.Benchmark([pyperf.Run(v, metadata={
                        "name": f"lmf-b{B}-{mode}-{k}{suffix}", "threads": str(args.threads), "unit": "second"},
                        collect_metadata=False)]))
            for clock, times in (("wall", wall), ("cpu", cpu)):
                line = [f"  batch {B:4d} {mode:8s} {clock:4s}"]
                for k, v in times.items():
                    med, q1, q3 = quantiles(v)
                    line.append(f"{k} {1e6 * med:7.1f} us (IQR {1e6 * q1:.1f}-{1e6 * q3:.1f})")
                ratios = [o / p for o, p in zip(times["mmfuse"], times["paper"])]
                rm, r1, r3 = quantiles(ratios)
                line.append(f"mmfuse/paper {rm:.3f}x (IQR {r1:.3f}-{r3:.3f})")
                print(" | ".join(line))
                if B == 64 and clock == "cpu":
                    verdicts.append((mode, rm))
    if args.output:
        pyperf.BenchmarkSuite(benches).dump(args.output, replace=True)
    for mode, rm in verdicts:
        print(f"{'PASS' if rm <= 1.0 else 'FAIL'}: batch 64 {mode} mmfuse/paper {rm:.3f}x (paired median, CPU time; "
              f"target <= 1.0x)")
    return 0 if all(rm <= 1.0 for _, rm in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
