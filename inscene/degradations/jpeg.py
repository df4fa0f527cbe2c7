"""The JPEG step: real libjpeg through Pillow (the replay path).

Real-ESRGAN compresses with a differentiable re-implementation of JPEG on float images at a
continuous quality. A dataset's LQ should carry the artefacts of the codec people actually meet,
so the replay path rounds the image to 8 bits and runs Pillow's JPEG (libjpeg-turbo) encoder and
decoder at an integer quality with Pillow's defaults (standard IJG tables scaled by quality,
4:2:0 chroma subsampling, no optimisation): exactly what ``Image.save(f, "JPEG", quality=q)``
followed by ``Image.open(f)`` gives. Quality 100 is valid (all-ones tables; no division by zero).

Batches are compressed on a thread pool: Pillow releases the GIL while it encodes and decodes.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from inscene.degradations.ops import to_uint8

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="jpeg")
    return _POOL


def jpeg_roundtrip(arr: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB uint8 (H, W, 3) array as JPEG at ``quality`` with Pillow and decode it."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def jpeg(x: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """JPEG-compress each sample of a float batch (B, 3, H, W) at its own quality.

    Values are clamped to [0, 1] and rounded to 8 bits first; the result is on the 8-bit grid
    (float, divided by 255), on ``x``'s device.
    """
    if x.shape[0] != len(qualities):
        raise ValueError(f"{len(qualities)} qualities for {x.shape[0]} images")
    arrs = to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()
    if len(arrs) == 1:
        outs = [jpeg_roundtrip(arrs[0], qualities[0])]
    else:
        outs = list(_pool().map(jpeg_roundtrip, arrs, qualities))
    out = torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2)
    return out.to(device=x.device, dtype=x.dtype).div_(255.0)
