"""``python -m benchmarks.perf fadex``: Stage I (detect + align + ``gt`` Ref-FR + warp back) vs detection alone.

On real photos that installed packages ship (scikit-image's astronaut, insightface's t1.jpg group
photo), and the astronaut upscaled 4x (a ~400 px face in a 2048 px scene), Stage I runs end to end
with the ``gt`` backend and the faces detector runs alone, alternating, in the same process. Prints
per-image times of each, the align + warp-back share, and, last (printed by ``benchmarks.perf``),
``ratio=<stage I/detection>`` (Stage I's overhead over the detection it starts with).

``--fadex`` also times the FaDeX encoder (default config) forward on a 256x256 pair and a
forward+backward at batch 20 on 512x512 pairs on this machine's device (CPU here; the same numbers
on a GPU are what the issue asks for when one is available).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np

HELP = "Stage I (align + warp back, gt backend) per image vs the face detector alone"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", default="dlib", help="detector name (default dlib, the embedded one)")
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each (3)")
    p.add_argument("--fadex", action="store_true", help="also time the FaDeX encoder (forward/backward)")


def sample_images() -> dict[str, np.ndarray]:
    """The benchmark's photos: astronaut (512), t1.jpg (group), astronaut x4 (2048)."""
    import cv2
    from skimage import data

    root = Path(importlib.util.find_spec("insightface").submodule_search_locations[0])
    t1 = np.ascontiguousarray(cv2.imread(str(root / "data" / "images" / "t1.jpg"), cv2.IMREAD_COLOR)[:, :, ::-1])
    astro = data.astronaut()
    big = cv2.resize(astro, None, fx=4.0, fy=4.0, interpolation=cv2.INTER_CUBIC)
    return {"astronaut 512x512": astro, f"t1.jpg {t1.shape[1]}x{t1.shape[0]}": t1, "astronaut x4 2048x2048": big}


def _time_fadex() -> None:
    import torch

    from restorer.fadex import FaDeX

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = FaDeX().to(dev)
    model.eval()
    x = torch.rand(1, 6, 256, 256, device=dev)
    with torch.no_grad():
        model.encode(x)
        if dev == "cuda":
            torch.cuda.synchronize()
        t = []
        for _ in range(5):
            t0 = time.perf_counter()
            model.encode(x)
            if dev == "cuda":
                torch.cuda.synchronize()
            t.append(time.perf_counter() - t0)
    print(f"FaDeX encode 256x256 pair on {dev}: {statistics.median(t) * 1000:.1f} ms")
    model.train()
    xb = torch.rand(20, 6, 512, 512, device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    t = []
    for _ in range(3 if dev == "cuda" else 1):
        t0 = time.perf_counter()
        loss = model(xb).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        if dev == "cuda":
            torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    print(f"FaDeX forward+backward batch 20 of 512x512 on {dev}: {statistics.median(t):.2f} s/step "
          f"({20 / statistics.median(t):.1f} pairs/s)")


def run(args: argparse.Namespace) -> float:
    from inscene.faces import create_detector
    from restorer.stage1 import Stage1

    images = sample_images()
    det = create_detector(args.detector)
    det.load()
    stage = Stage1("gt", detector=det)
    det.detect(images["astronaut 512x512"])  # warm-up
    t_det: dict[str, list[float]] = {k: [] for k in images}
    t_st: dict[str, list[float]] = {k: [] for k in images}
    t_geo: dict[str, list[float]] = {k: [] for k in images}
    for _ in range(args.rounds):
        for name, img in images.items():
            t0 = time.perf_counter()
            faces = det.detect(img, select="largest")
            t_det[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = stage.run(img, ground_truth=img)
            t_st[name].append(time.perf_counter() - t0)
            if not res.ok:
                raise RuntimeError(f"benchmark photo {name}: {res.reason}")
            t0 = time.perf_counter()
            stage.run(img, ground_truth=img, face=faces[0])  # align + Ref-FR + warp back only
            t_geo[name].append(time.perf_counter() - t0)
    print(f"fadex/stage I: detector {det.backend}, Ref-FR gt, aligned {stage.size}px, median of {args.rounds} rounds")
    tot_d = tot_s = 0.0
    for name in images:
        d, s, g = (statistics.median(v[name]) for v in (t_det, t_st, t_geo))
        tot_d += d
        tot_s += s
        print(f"{name:24s}: detection {d * 1000:7.1f} ms | stage I {s * 1000:7.1f} ms "
              f"(align + warp back {g * 1000:5.1f} ms)")
    print(f"per image (mean of {len(images)}): detection {tot_d / len(images) * 1000:.1f} ms, "
          f"stage I {tot_s / len(images) * 1000:.1f} ms")
    if args.fadex:
        _time_fadex()
    return tot_s / tot_d
