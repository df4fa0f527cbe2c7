"""``python -m benchmarks.perf faces``: downscaled vs full-resolution face detection.

On a 4000x3000 photo composed from the sample photos that installed packages ship (insightface's
t1.jpg group photo and scikit-image's astronaut, upscaled so faces are 200-300 px), the same
detector runs with detection on a copy downscaled to ``--max-side`` and at full resolution, in
the same process. Prints the speed of each, the box IoU between the two runs on faces of at
least ``--min-face`` px, and, last (printed by ``benchmarks.perf``), ``ratio=<downscaled/full
speed>``. Issue 3's targets: IoU >= 0.9, ratio >= 5.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np

HELP = "face detection on a 4000x3000 photo: downscaled copy vs full resolution"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", default="dlib", help="detector name (default dlib, the embedded one)")
    p.add_argument("--max-side", type=int, default=None, help="downscaled copy's longest side (default: FaceSettings)")
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each (3)")
    p.add_argument("--min-face", type=float, default=64, help="IoU over faces at least this wide (64 px)")


def sample_photo(width: int = 4000, height: int = 3000) -> np.ndarray:
    """A 4000x3000 RGB scene from the sample photos (6 faces from t1.jpg, 1 from the astronaut)."""
    import cv2
    from skimage import data

    root = Path(importlib.util.find_spec("insightface").submodule_search_locations[0])
    t1 = cv2.imread(str(root / "data" / "images" / "t1.jpg"), cv2.IMREAD_COLOR)[:, :, ::-1]
    astro = data.astronaut()
    canvas = cv2.resize(np.ascontiguousarray(t1), (width, height), interpolation=cv2.INTER_CUBIC)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 25)  # a plausible, face-free background
    group = cv2.resize(np.ascontiguousarray(t1), None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    gh, gw = group.shape[:2]
    canvas[100 : 100 + gh, 80 : 80 + gw] = group
    a = cv2.resize(astro, None, fx=2.6, fy=2.6, interpolation=cv2.INTER_CUBIC)
    ah, aw = a.shape[:2]
    y0, x0 = height - ah - 60, width - aw - 60
    canvas[y0 : y0 + ah, x0 : x0 + aw] = a
    return np.ascontiguousarray(canvas)


def _match(full: list, small: list, min_face: float) -> tuple[list[float], int]:
    from inscene.faces.detectors import box_iou

    big = [f for f in full if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_face]
    ious = []
    for f in big:
        best = max((box_iou(np.array(f.box), np.array(g.box)) for g in small), default=0.0)
        ious.append(best)
    return ious, len(big)


def run(args: argparse.Namespace) -> float:
    from inscene.config import FaceSettings
    from inscene.faces import create_detector

    max_side = args.max_side or FaceSettings().detect_max_side
    img = sample_photo()
    down = create_detector(args.detector, max_side=max_side)
    full = create_detector(args.detector, max_side=None)
    down.load()
    full.load()
    down.detect(img[:600, :800])  # warm-up (first-call allocations)

    t_down: list[float] = []
    t_full: list[float] = []
    faces_down: list = []
    faces_full: list = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        faces_full = full.detect(img)
        t_full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        faces_down = down.detect(img)
        t_down.append(time.perf_counter() - t0)

    ious, n_big = _match(faces_full, faces_down, args.min_face)
    found = [i for i in ious if i > 0.3]
    speed_down = 1.0 / statistics.median(t_down)
    speed_full = 1.0 / statistics.median(t_full)
    h, w = img.shape[:2]
    print(
        f"faces: detector {down.backend} on a {w}x{h} photo from the sample images, "
        f"median of {args.rounds} alternating runs"
    )
    print(
        f"full resolution   : {speed_full:6.2f} detections/s ({statistics.median(t_full):.2f} s), "
        f"{len(faces_full)} faces"
    )
    print(
        f"downscaled to {max_side:<4}: {speed_down:6.2f} detections/s ({statistics.median(t_down):.2f} s), "
        f"{len(faces_down)} faces"
    )
    if ious:
        print(
            f"box IoU on the {n_big} faces >= {args.min_face:g} px found at full resolution: "
            f"mean {np.mean(ious):.3f}, min {np.min(ious):.3f}; found by both {len(found)}/{n_big}"
        )
    else:
        print(f"box IoU: no face >= {args.min_face:g} px found at full resolution")
    return speed_down / speed_full
