"""Table loader benchmark (issue 12): mmfuse's ``load_table`` against a plain PIL + numpy loop over the same files.

Each measurement is one fresh Python process (``--worker``): imports and set-up happen before the baseline, the
timed region is the load only, and the peak memory is ``ru_maxrss`` (peak resident set) minus its value after
the imports (so it counts what the load adds). Modes are interleaved (plain, mmfuse, plain, cached, ...) after one
discarded warm-up run of each (which also fills the OS page cache and writes the decoded cache), and the median
and IQR over the repeats are reported, with the thread count (torch and numpy are pinned to 1 thread).

    python benchmarks/table_loader.py --rows 10000 --size 32 --repeats 7
    python benchmarks/table_loader.py --stream-train --size 16 --repeats 3   # (d) streaming fit, 10k vs 100k rows
    python benchmarks/table_loader.py --stream-train --size 16 --repeats 3 --workers 2   # (d) with 2 DataLoader workers
    python benchmarks/table_loader.py --npy --rows 5000 --size 64 --repeats 11   # (e) a 64x64 float32 npy column

(a) plain: for each file Image.open, convert("RGB"), np.asarray(float32) / 255, transpose to CHW; np.stack.
(b) mmfuse: load_table(schema, cache=False, stream=False) (same float32 CHW array plus a numeric column).
(c) cached: load_table(schema, cache_dir=..., stream=False) with the decoded cache already written.
(d) peak memory of `fit` (1 epoch, mlp encoders, stream=true, data.num_workers=0 or 2) over N rows of images:
    the main process's ru_maxrss delta, and the peak over time of the summed PSS (proportional set size: shared
    copy-on-write pages counted once) of the whole process tree (main + DataLoader workers), sampled every
    0.1 s from /proc/<pid>/smaps_rollup, minus the main process's PSS after the imports (also Pss_Anon alone:
    total PSS includes shared-library pages whose PSS moves with the other processes on the machine); each also up to the
    end of training (a Lightning callback at on_fit_end: load + epochs + validation loops), before fit's final
    evaluation of val / test and its diagnostics, whose held outputs grow with the val / test rows.
(e) npy: plain = np.load of each file + np.stack; mmfuse / cached as in (b) / (c), over a column of float32 npy
    files of shape (size, size).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
THREADS = 1


def write_table(root: Path, rows: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    done = root / "s.yaml"
    if done.is_file():
        return done
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["img,x,label"]
    for i in range(rows):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(a).save(root / "img" / f"{i}.png", compress_level=1)
        lines.append(f"img/{i}.png,{rng.normal():.5f},{'ab'[i % 2]}")
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    done.write_text("table: t.csv\ntarget: label\nsplit: {fractions: [0.8, 0.1, 0.1]}\nmodalities:\n"
                    "  img: {column: img, loader: image}\n  num: {columns: [x], loader: numeric}\n")
    return done


def write_npy_table(root: Path, rows: int, size: int) -> Path:
    import numpy as np

    done = root / "s.yaml"
    if done.is_file():
        return done
    (root / "x").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["x,label"]
    for i in range(rows):
        np.save(root / "x" / f"{i}.npy", rng.standard_normal((size, size)).astype(np.float32))
        lines.append(f"x/{i}.npy,{'ab'[i % 2]}")
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    done.write_text("table: t.csv\ntarget: label\nsplit: {fractions: [0.8, 0.1, 0.1]}\nmodalities:\n"
                    "  x: {column: x, loader: npy}\n")
    return done


def npy_worker(mode: str, root: Path) -> dict:
    import numpy as np
    import pandas  # noqa: F401

    import mmfuse.datasets.table_cache  # noqa: F401
    from mmfuse.datasets.table import load_table

    paths = [root / line.split(",")[0] for line in (root / "t.csv").read_text().split("\n")[1:] if line]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if mode == "plain":
        arr = np.stack([np.load(p, allow_pickle=False) for p in paths])
        nbytes = arr.nbytes
    else:
        splits = load_table(root / "s.yaml", stream=False, cache=(mode == "cached"), cache_dir=root / "cache")
        bank = splits["train"].arrays["x"].bank
        assert np.shares_memory(bank, splits["test"].arrays["x"].bank)
        nbytes = bank.nbytes
        _ = float(np.asarray(splits["test"].arrays["x"][0]).sum())
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"time": dt, "peak_mb": (peak - base) / 1024, "decoded_mb": nbytes / 2**20}


def _pss_kb(pid: int, field: str = "Pss:") -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _anon_pss_kb(pid: int) -> int:
    """PSS of the anonymous pages only (Pss_Anon): the processes' own memory, copy-on-write pages shared by the
    DataLoader workers with the main process counted once. Total PSS also holds the shared libraries' file pages
    (libtorch: tens of MB), whose PSS is divided by every process on the machine mapping them, so it moves with
    the other jobs on a shared machine; the main process's file pages are in its ru_maxrss."""
    return _pss_kb(pid, "Pss_Anon:")


def _tree(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def worker(mode: str, root: Path) -> dict:
    import numpy as np
    from PIL import Image

    import pandas  # noqa: F401 - set-up outside the measured region (both modes import it)
    from PIL import PngImagePlugin  # noqa: F401

    import mmfuse.datasets.table_cache  # noqa: F401
    from mmfuse.datasets.table import load_table

    paths = [root / "img" / line.split(",")[0].split("/")[1] for line in (root / "t.csv").read_text().split("\n")[1:]
             if line]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if mode == "plain":
        out = []
        for p in paths:
            with Image.open(p) as im:
                out.append((np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).transpose(2, 0, 1))
        arr = np.stack(out)
        nbytes = arr.nbytes
    else:
        splits = load_table(root / "s.yaml", stream=False, cache=(mode == "cached"), cache_dir=root / "cache")
        nbytes = splits["train"].arrays["img"].bank.nbytes
        _ = float(np.asarray(splits["test"].arrays["img"][0]).sum())
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"time": dt, "peak_mb": (peak - base) / 1024, "decoded_mb": nbytes / 2**20}


def train_worker(root: Path, stream: bool = True, workers: int = 0, diagnostics: bool = True) -> dict:
    import threading

    from mmfuse.config import parse_config
    from mmfuse.training.fit import fit

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    me = os.getpid()
    base_pss, base_anon = _pss_kb(me), _anon_pss_kb(me)
    peak_tree, peak_anon = [0], [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            procs = _tree(me)
            peak_tree[0] = max(peak_tree[0], sum(_pss_kb(p) for p in procs))
            peak_anon[0] = max(peak_anon[0], sum(_anon_pss_kb(p) for p in procs))
            stop.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    raw = {"data": {"name": "table", "options": {"schema": str(root / "s.yaml"), "stream": stream, "cache": False},
                    "batch_size": 256, "eval_batch_size": 512, "num_workers": workers},
           "model": {"strategy": "feature", "encoders": {"img": {"name": "mlp", "options": {"hidden": [32]}},
                                                          "num": {"name": "mlp", "options": {"hidden": [8]}}},
                     "fusion": {"name": "concat"}},
           "training": {"max_epochs": 1, "diagnostics": diagnostics}, "output_dir": str(root / "run"), "seed": 0}
    cfg = parse_config(raw)
    from mmfuse.training.system import import_lightning  # as fit imports it (counted in the peak, as before)

    L = import_lightning()

    at_fit_end = {}

    class TrainingPeak(L.Callback):  # the peak up to the end of training (load + epochs + validation loops)
        def on_fit_end(self, trainer, module):
            at_fit_end["main"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            at_fit_end["tree"] = peak_tree[0]
            at_fit_end["anon"] = peak_anon[0]

    t0 = time.perf_counter()
    fit(cfg, callbacks=[TrainingPeak()])
    dt = time.perf_counter() - t0
    stop.set()
    th.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"time": dt, "peak_mb": (peak - base) / 1024, "tree_pss_mb": (peak_tree[0] - base_pss) / 1024,
            "train_peak_mb": (at_fit_end["main"] - base) / 1024,
            "train_tree_pss_mb": (at_fit_end["tree"] - base_pss) / 1024,
            "tree_anon_mb": (peak_anon[0] - base_anon) / 1024, "train_tree_anon_mb": (at_fit_end["anon"] - base_anon) / 1024}


def run(args: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return f"median {statistics.median(xs):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--worker", default=None)
    ap.add_argument("--stream-train", action="store_true")
    ap.add_argument("--stream-rows", default="10000,100000")
    ap.add_argument("--in-memory", action="store_true", help="(d) with stream: false, for comparison")
    ap.add_argument("--workers", type=int, default=0, help="(d) data.num_workers")
    ap.add_argument("--npy", action="store_true", help="(e) the npy column instead of images")
    ap.add_argument("--no-diagnostics", action="store_true", help="(d) with training.diagnostics: false")
    a = ap.parse_args()
    if a.worker:
        root = Path(a.dir)
        if a.worker.startswith("train"):
            print(json.dumps(train_worker(root, a.worker == "train", a.workers, not a.no_diagnostics)))
        else:
            print(json.dumps((npy_worker if a.npy else worker)(a.worker, root)))
        return
    base = Path(a.dir or tempfile.mkdtemp(prefix="mmfuse-bench-"))
    print(f"uptime: {os.popen('uptime').read().strip()}; threads: {THREADS}; dir {base}")
    if a.stream_train:
        sizes = [int(x) for x in a.stream_rows.split(",")]
        res_d: dict[int, list[dict]] = {n: [] for n in sizes}
        for n in sizes:
            write_table(base / f"s{n}x{a.size}", n, a.size)
        for r in range(a.repeats):  # sizes interleaved
            for n in (sizes if r % 2 == 0 else sizes[::-1]):
                res_d[n].append(run(["--worker", "train-mem" if a.in_memory else "train", "--workers",
                                     str(a.workers), "--dir", str(base / f"s{n}x{a.size}")]
                                    + (["--no-diagnostics"] if a.no_diagnostics else [])))
        for n in sizes:
            rs = res_d[n]
            print(f"(d) {'in-memory' if a.in_memory else 'streaming'} 1-epoch fit, data.num_workers={a.workers}, "
                  f"training.diagnostics={not a.no_diagnostics}, "
                  f"{n} rows of {a.size}x{a.size}x3, {a.repeats} runs: main peak RSS MB {summary([x['peak_mb'] for x in rs])}; "
                  f"process-tree peak PSS MB {summary([x['tree_pss_mb'] for x in rs])}; "
                  f"up to the end of training (before the final evaluation and diagnostics): main MB "
                  f"{summary([x['train_peak_mb'] for x in rs])}, tree MB {summary([x['train_tree_pss_mb'] for x in rs])}; "
                  f"process-tree peak anonymous PSS MB {summary([x['tree_anon_mb'] for x in rs])}, up to the end of "
                  f"training {summary([x['train_tree_anon_mb'] for x in rs])}; "
                  f"time s {summary([x['time'] for x in rs])}")
        print(f"uptime after: {os.popen('uptime').read().strip()}")
        return
    root = base / (f"n{a.rows}x{a.size}" if a.npy else f"t{a.rows}x{a.size}")
    (write_npy_table if a.npy else write_table)(root, a.rows, a.size)
    extra = ["--npy"] if a.npy else []
    modes = ["plain", "mmfuse", "cached"]
    res: dict[str, list[dict]] = {m: [] for m in modes}
    for m in modes:  # warm-up (page cache, decoded cache written), discarded
        run(["--worker", m, "--dir", str(root)] + extra)
    for r in range(a.repeats):
        for m in (modes if r % 2 == 0 else modes[::-1]):
            res[m].append(run(["--worker", m, "--dir", str(root)] + extra))
    t = {m: [x["time"] for x in res[m]] for m in modes}
    p = {m: [x["peak_mb"] for x in res[m]] for m in modes}
    what = f"{a.size}x{a.size} float32 .npy" if a.npy else f"{a.size}x{a.size}x3 PNG"
    print(f"{a.rows} rows of {what}, decoded {res['plain'][0]['decoded_mb']:.0f} MB float32; "
          f"{a.repeats} interleaved repeats, fresh process each; peak = ru_maxrss delta over the post-import baseline")
    for m in modes:
        print(f"  {m:7s} time s: {summary(t[m])}; peak MB: {summary(p[m])}")
    for m in ("mmfuse", "cached"):
        ratios = [x / y for x, y in zip(t[m], t["plain"])]
        pr = [x / y for x, y in zip(p[m], p["plain"])]
        print(f"  {m}/plain time ratio: {summary(ratios)}; peak ratio: {summary(pr)}")
    print(f"uptime after: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
