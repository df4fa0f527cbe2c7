"""Generated evaluation splits: InScene-layout shards with LQ/GT pairs and recorded faces.

For tests, the demo and the perf benchmark; nothing here is downloaded. Each GT is a smooth
procedural scene with a real face pasted in (scikit-image's ``astronaut`` photo), whose box and five
landmarks are recorded in the sample metadata exactly as :meth:`inscene.schema.Sample.to_meta`
writes them; the LQ is the GT blurred, downscaled by ``scale``, with noise, 8-bit.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["GeneratedPair", "generate_pairs", "write_folders", "write_split"]

# Face in skimage.data.astronaut() (512x512) as inscene's dlib detector finds it: box and the
# 5 points (left eye, right eye, nose, left mouth corner, right mouth corner).
_ASTRO_BOX = (179.0, 87.0, 272.0, 179.0)
_ASTRO_LMS = ((203.333, 101.5), (246.833, 103.667), (225.0, 127.0), (201.0, 139.0), (246.0, 141.0))
_ASTRO_CROP = (150, 50, 302, 202)  # x1, y1, x2, y2: the face with some margin (152x152)


@dataclass
class GeneratedPair:
    key: str
    gt: np.ndarray
    lq: np.ndarray
    box: list[float]
    landmarks: list[list[float]]


def _astronaut_crop() -> np.ndarray:
    import skimage.data

    x1, y1, x2, y2 = _ASTRO_CROP
    return np.ascontiguousarray(skimage.data.astronaut()[y1:y2, x1:x2])


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    import cv2

    low = rng.random((max(2, size // 32), max(2, size // 32), 3)).astype(np.float32)
    base = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    detail = cv2.resize(rng.random((size // 4, size // 4, 3)).astype(np.float32), (size, size),
                        interpolation=cv2.INTER_LINEAR)
    img = 0.75 * base + 0.25 * detail
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


def generate_pairs(
    n: int, size: int = 128, scale: int = 4, seed: int = 0, prefix: str = "s"
) -> Iterator[GeneratedPair]:
    """``n`` deterministic (GT, LQ, face) triples; GT is ``size`` x ``size``, LQ ``size // scale``."""
    import cv2

    if size % scale:
        raise ValueError(f"size {size} must be a multiple of scale {scale}")
    face = _astronaut_crop()
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        gt = _scene(rng, size)
        fsize = int(size * rng.uniform(0.3, 0.5))
        ox, oy = (int(v) for v in rng.integers(0, size - fsize, size=2))
        gt[oy : oy + fsize, ox : ox + fsize] = cv2.resize(face, (fsize, fsize), interpolation=cv2.INTER_AREA)
        k = fsize / face.shape[0]
        cx, cy = _ASTRO_CROP[0], _ASTRO_CROP[1]
        box = [ox + (_ASTRO_BOX[0] - cx) * k, oy + (_ASTRO_BOX[1] - cy) * k,
               ox + (_ASTRO_BOX[2] - cx) * k, oy + (_ASTRO_BOX[3] - cy) * k]
        lms = [[ox + (x - cx) * k, oy + (y - cy) * k] for x, y in _ASTRO_LMS]
        blurred = cv2.GaussianBlur(gt, (0, 0), sigmaX=0.6 * scale)
        lq = cv2.resize(blurred, (size // scale, size // scale), interpolation=cv2.INTER_AREA).astype(np.float32)
        lq += rng.normal(0.0, 3.0, lq.shape).astype(np.float32)
        lq = np.clip(np.round(lq), 0, 255).astype(np.uint8)
        yield GeneratedPair(f"{prefix}{i:05d}", gt, lq, [round(v, 3) for v in box],
                            [[round(x, 3), round(y, 3)] for x, y in lms])


def _png(arr: np.ndarray) -> bytes:
    from inscene.imageio import encode_image

    return encode_image(arr, "png")


def write_split(
    root: str | os.PathLike,
    split: str = "val-synthetic",
    *,
    n: int = 8,
    size: int = 128,
    scale: int = 4,
    seed: int = 0,
    subset: str = "synthetic",
    lq_field: str = "lq0.png",
    gt_field: str = "hq.png",
    with_gt: bool = True,
    with_faces: bool = True,
    max_count: int = 1000,
) -> Path:
    """Write a generated split as InScene shards (``{root}/{split}/{subset}-NNNNN.tar`` + manifests).

    Member names default to what ``inscene degrade`` writes (``hq.png``, ``lq0.png``).
    """
    from inscene.schema import Face, Provenance, Sample
    from inscene.shards import ShardWriter, write_index

    root = Path(root)
    with ShardWriter(root, split, subset, max_count=max_count) as w:
        for p in generate_pairs(n, size, scale, seed, prefix=f"{subset[:3]}"):
            gt_bytes = _png(p.gt)
            faces = [Face(box=p.box, landmarks=p.landmarks, score=1.0, backend="generated")] if with_faces else []
            sample = Sample(
                key=p.key, split=split, subset=subset, width=size, height=size,
                identity_id=f"id{int(p.key[3:]) % 3:03d}",
                faces=faces,
                provenance=Provenance(source=f"generated:{seed}:{p.key}",
                                      sha256=hashlib.sha256(gt_bytes).hexdigest(), backends={}, seed=seed),
            )
            members = {lq_field: _png(p.lq)}
            if with_gt:
                members[gt_field] = gt_bytes
            w.write(p.key, members, sample.to_meta())
    write_index(root)
    return root


def write_folders(
    root: str | os.PathLike, *, n: int = 4, size: int = 128, scale: int = 4, seed: int = 0
) -> tuple[Path, Path]:
    """Write a generated plain folder pair ``root/lq`` and ``root/gt`` (``KEY.png`` each)."""
    root = Path(root)
    (root / "lq").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    for p in generate_pairs(n, size, scale, seed):
        (root / "lq" / f"{p.key}.png").write_bytes(_png(p.lq))
        (root / "gt" / f"{p.key}.png").write_bytes(_png(p.gt))
    return root / "lq", root / "gt"
