"""``python -m benchmarks.perf evaluate``: the evaluator against a naive per-image pyiqa loop.

Issue 7's benchmark: 200 generated 1024x1024 GT/prediction pairs (an InScene shard split plus a
folder of predictions named by key), scored with the weight-free metrics (PSNR and SSIM with the
S3Diff convention, PIQE):

(a) through the evaluator (:func:`benchmarks.evaluate.evaluate`, external predictions, a local
    Dask cluster of ``--workers`` processes, started inside the timed call), cold cache;
(b) a naive loop, one image at a time, of ``pyiqa`` metric calls on the image files
    (``psnr(pred, gt)``, ``ssim(pred, gt)``, ``piqe(pred)`` as pyiqa reads paths), in the same
    process, on the first ``--naive-n`` pairs (default: all) to measure its throughput;

then (a) again with the warm cache. The last line (printed by ``benchmarks.perf``) is
``ratio=<(a)/(b) throughput> cache=<cold/warm time>``; the issue's targets are >= 2 and >= 20.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

HELP = "evaluator (cold and warm cache) vs a naive per-image pyiqa loop, weight-free metrics"
METRICS = ("psnr", "ssim", "piqe")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=200, help="generated pairs (200)")
    p.add_argument("--size", type=int, default=1024, help="GT side in pixels (1024)")
    p.add_argument("--workers", type=int, default=None, help="Dask worker processes (default: CPU cores)")
    p.add_argument("--naive-n", type=int, default=None, help="pairs timed in the naive loop (default: all)")
    p.add_argument("--keep", type=Path, default=None, help="keep the generated data and results here")


def _generate(root: Path, n: int, size: int) -> tuple[Path, Path, Path]:
    """A shard split (LQ + GT), a predictions folder (bicubic x4) and a GT folder, as PNG."""
    import numpy as np
    from PIL import Image

    from benchmarks.synthetic import generate_pairs
    from inscene.imageio import encode_image
    from inscene.schema import Face, Provenance, Sample
    from inscene.shards import ShardWriter, write_index

    data, preds, gts = root / "data", root / "preds", root / "gt"
    preds.mkdir(parents=True)
    gts.mkdir(parents=True)
    with ShardWriter(data, "val-synthetic", "synthetic", max_count=1000) as w:
        for p in generate_pairs(n, size, 4, seed=7, prefix="syn"):
            gt_png = encode_image(p.gt, "png")
            sample = Sample(
                key=p.key, split="val-synthetic", subset="synthetic", width=size, height=size,
                faces=[Face(box=p.box, landmarks=p.landmarks, score=1.0, backend="generated")],
                provenance=Provenance(source="perf", sha256="0" * 64),
            )
            w.write(p.key, {"hq.png": gt_png, "lq0.png": encode_image(p.lq, "png")}, sample.to_meta())
            pred = Image.fromarray(p.lq).resize((size, size), Image.BICUBIC)
            (preds / f"{p.key}.png").write_bytes(encode_image(np.asarray(pred), "png"))
            (gts / f"{p.key}.png").write_bytes(gt_png)
    write_index(data)
    return data, preds, gts


def _naive(preds: Path, gts: Path, n: int) -> tuple[float, int]:
    """Seconds for the per-image pyiqa loop over the first ``n`` pairs."""
    import pyiqa
    import torch

    psnr = pyiqa.create_metric("psnr", device="cpu", test_y_channel=True, color_space="ycbcr")
    ssim = pyiqa.create_metric("ssim", device="cpu", test_y_channel=True, color_space="ycbcr")
    piqe = pyiqa.create_metric("piqe", device="cpu")
    files = sorted(preds.glob("*.png"))[:n]
    t0 = time.perf_counter()
    with torch.no_grad():
        for f in files:
            g = str(gts / f.name)
            psnr(str(f), g)
            ssim(str(f), g)
            piqe(str(f))
    return time.perf_counter() - t0, len(files)


def run(args: argparse.Namespace) -> tuple[float, str]:
    from benchmarks.evaluate import evaluate
    from benchmarks.methods import ExternalMethod
    from benchmarks.splits import ShardSource
    from inscene.runtime import ClusterOptions

    warnings.filterwarnings("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="inscene-perf-eval-"))
    root = args.keep or tmp
    try:
        t = time.perf_counter()
        data, preds, gts = _generate(root, args.n, args.size)
        print(f"evaluate: {args.n} pairs of {args.size}x{args.size} generated in {time.perf_counter() - t:.1f}s; "
              f"metrics {', '.join(METRICS)}")
        cluster = ClusterOptions(workers=args.workers, dashboard=False)

        def run_a() -> tuple[float, object]:
            t0 = time.perf_counter()
            rep = evaluate(ShardSource(data, "val-synthetic"), ExternalMethod(preds, name="bench"),
                           metrics=METRICS, results=root / "results", cluster=cluster, bootstrap=1000)
            return time.perf_counter() - t0, rep

        cold, rep = run_a()
        assert rep.complete, [p.line() for r in rep.rows for p in r.problems]
        naive_s, naive_n = _naive(preds, gts, args.naive_n or args.n)
        warm, rep2 = run_a()
        assert rep2.computed == 0, "warm run recomputed scores"
        a = args.n / cold
        b = naive_n / naive_s
        m = rep.rows[0].metrics
        print(f"(a) evaluator, cold cache : {cold:7.2f}s  {a:6.2f} pairs/s  ({cluster.n_workers()} workers, "
              f"PSNR {m['psnr'].mean:.4f}, SSIM {m['ssim'].mean:.4f}, PIQE {m['piqe'].mean:.2f})")
        print(f"(b) naive pyiqa loop      : {naive_s:7.2f}s  {b:6.2f} pairs/s  ({naive_n} pairs, 1 process)")
        print(f"(a) evaluator, warm cache : {warm:7.2f}s  ({rep2.cached} cached values, {rep2.computed} computed)")
        return a / b, f"cache={cold / warm:.1f}"
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
