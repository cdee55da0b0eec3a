"""How ``low_rank`` reads its parameters: the cost of honouring ``torch.nn.utils.parametrize``.

Three forms of ``LowRankFusion.fuse``, identical maths, on the same parameter values:

* ``direct``  — the former code: ``factors._parameters.values()`` and ``self._parameters[...]`` (a parametrized
  factor is silently skipped: wrong result);
* ``attr``    — plain attribute access (``getattr(factors, key)``, ``self.rank_weights``, ``self.bias``);
* ``mmfuse``  — the shipped code: ``_parameters.get(name)``, falling back to the attribute when the name is not
  there (the parametrized case).

Two modalities of width 32, rank 4, output 64 (as ``lmf_vs_paper.py``), all-True mask (the fast path), under
``torch.no_grad()`` and forward + backward. Interleaved in one process (the order rotated every sample) after a
warm-up; each sample is the mean of ``--inner`` calls, by this thread's CPU time; reports the medians, IQRs and the
paired ratios to ``direct`` with the thread count. No file is written.

    PYTHONPATH=src .venv/bin/python benchmarks/lmf_param_access.py [--repeats 300] [--inner 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmfuse.fusion.base import masked
from mmfuse.fusion.tensor import LowRankFusion


def _fuse_direct(self, xs, present):
    prod = None
    for i, (x, w, sizes) in enumerate(zip(xs, self.factors._parameters.values(), self._row_split)):
        if present is not None:
            x = masked(x, present[:, i], 0.0)
        w0, w1 = w.split_with_sizes(sizes, 1)
        f = torch.baddbmm(w0, x.expand(w.shape[0], -1, -1), w1)
        prod = f if prod is None else prod * f
    R, B, H = prod.shape
    own = self._parameters
    return torch.matmul(own["rank_weights"], prod.view(R, B * H)).view(B, H) + own["bias"]


def _fuse_attr(self, xs, present):
    factors = self.factors
    prod = None
    for i, (x, key, sizes) in enumerate(zip(xs, self._factor_keys, self._row_split)):
        w = getattr(factors, key)
        if present is not None:
            x = masked(x, present[:, i], 0.0)
        w0, w1 = w.split_with_sizes(sizes, 1)
        f = torch.baddbmm(w0, x.expand(w.shape[0], -1, -1), w1)
        prod = f if prod is None else prod * f
    R, B, H = prod.shape
    return torch.matmul(self.rank_weights, prod.view(R, B * H)).view(B, H) + self.bias


class _Direct(LowRankFusion):
    fuse = _fuse_direct

    def fuse_all_present(self, xs):
        return _fuse_direct(self, xs, None)


class _Attr(LowRankFusion):
    fuse = _fuse_attr

    def fuse_all_present(self, xs):
        return _fuse_attr(self, xs, None)


def _q(v):
    q = statistics.quantiles(v, n=4, method="inclusive")
    return statistics.median(v), q[0], q[2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dims, rank, out = {"audio": 32, "image": 32}, 4, 64
    torch.manual_seed(0)
    ops = {"direct": _Direct(dims, rank=rank, output_dim=out), "attr": _Attr(dims, rank=rank, output_dim=out),
           "mmfuse": LowRankFusion(dims, rank=rank, output_dim=out)}
    for op in ops.values():
        op.load_state_dict(ops["direct"].state_dict())
        assert op.has_fast_path()
    print(f"low_rank parameter access: dims {dims}, rank {rank}, output {out}, threads {args.threads}, "
          f"{args.repeats} interleaved samples of {args.inner} calls (CPU time of the thread), torch {torch.__version__}")
    for B in args.batches:
        g = torch.Generator().manual_seed(B)
        z = {m: torch.randn(B, d, generator=g) for m, d in dims.items()}
        full = {m: torch.ones(B, dtype=torch.bool) for m in dims}
        with torch.no_grad():
            ref = ops["direct"](z, full)
            assert all(torch.equal(op(z, full), ref) for op in ops.values())
        zg = {m: v.clone().requires_grad_(True) for m, v in z.items()}
        for mode in ("no_grad", "fwd+bwd"):
            if mode == "no_grad":
                fns = {k: (lambda op=op: op(z, full)) for k, op in ops.items()}
            else:
                fns = {k: (lambda op=op: op(zg, full).sum().backward()) for k, op in ops.items()}
            with torch.set_grad_enabled(mode != "no_grad"):
                for fn in fns.values():
                    for _ in range(args.warmup):
                        fn()
                times = {k: [] for k in fns}
                names = list(fns)
                for r in range(args.repeats):
                    order = names[r % len(names):] + names[:r % len(names)]
                    for k in order:
                        c = time.thread_time()
                        for _ in range(args.inner):
                            fns[k]()
                        times[k].append((time.thread_time() - c) / args.inner)
            parts = []
            for k, v in times.items():
                m, q1, q3 = _q(v)
                parts.append(f"{k} {1e6 * m:.1f} us (IQR {1e6 * q1:.1f}-{1e6 * q3:.1f})")
            for k in ("attr", "mmfuse"):
                m, q1, q3 = _q([a / b for a, b in zip(times[k], times["direct"])])
                parts.append(f"{k}/direct {m:.3f}x (IQR {q1:.3f}-{q3:.3f})")
            print(f"  batch {B:4d} {mode:8s} " + " | ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
