"""Spatially varying blur: a position-dependent PSF field (§9.8, after Lin et al., "Learning lens
blur fields"), mild at the image centre and growing towards the corners.

The field (:class:`inscene.schema.PSFField`) places ``grid`` x ``grid`` anchor PSFs on a lattice
spanning the image, corners included. The anchor at normalised radius r (0 at the centre, 1 at the
corners) and polar angle φ is a Gaussian elongated along the radius: tangential σ_t = σ_c +
(σ_k − σ_c)·r^γ, radial σ_r = σ_t·(1 + (a − 1)·r^γ), rotated by φ, as lens blur grows and turns
radial off-axis. The PSF at a pixel is the bilinear blend of its four neighbouring anchors, so the
output is Σ_a w_a(p)·(K_a ⋆ x)(p): each anchor filters only the cells its tent weight covers
(about four images' worth of filtering in total, whatever the grid).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from inscene.degradations.config import SpatialBlurSettings
from inscene.degradations.kernels import gaussian_kernel
from inscene.degradations.ops import filter_valid, pad_reflect
from inscene.schema import PSFField


def anchor_positions(n: int, count: int) -> np.ndarray:
    """``count`` anchor coordinates spanning 0..n-1 (fewer when the axis is shorter)."""
    count = max(1, min(count, n))
    if count == 1:
        return np.array([(n - 1) / 2.0])
    return np.linspace(0.0, n - 1.0, count)


def anchor_psf(field: PSFField, r: float, phi: float) -> np.ndarray:
    """The field's PSF at normalised radius ``r`` and polar angle ``phi``."""
    grow = min(max(r, 0.0), 1.0) ** field.exponent
    sigma_t = field.sigma_center + (field.sigma_corner - field.sigma_center) * grow
    sigma_r = sigma_t * (1.0 + (field.anisotropy - 1.0) * grow)
    return gaussian_kernel(field.size, sigma_r, sigma_t, phi)


def anchor_kernels(field: PSFField, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anchor rows, anchor columns and the (rows, cols, size, size) anchor PSFs for an h x w image."""
    ys, xs = anchor_positions(h, field.grid), anchor_positions(w, field.grid)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    half_diag = math.hypot(cy, cx) or 1.0
    ks = np.empty((len(ys), len(xs), field.size, field.size))
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            dy, dx = y - cy, x - cx
            ks[i, j] = anchor_psf(field, math.hypot(dx, dy) / half_diag, math.atan2(dy, dx))
    return ys, xs, ks


def _tent(coords: np.ndarray, anchors: np.ndarray, i: int) -> tuple[int, int, np.ndarray]:
    """First and last index covered by anchor i's tent, and the weights there."""
    if len(anchors) == 1:
        return 0, len(coords) - 1, np.ones(len(coords))
    step = anchors[1] - anchors[0]
    lo = int(math.floor(anchors[i] - step)) + 1 if i > 0 else 0
    hi = int(math.ceil(anchors[i] + step)) - 1 if i < len(anchors) - 1 else len(coords) - 1
    lo, hi = max(lo, 0), min(hi, len(coords) - 1)
    wgt = np.clip(1.0 - np.abs(coords[lo : hi + 1] - anchors[i]) / step, 0.0, 1.0)
    return lo, hi, wgt


def apply_psf_field(x: torch.Tensor, field: PSFField) -> torch.Tensor:
    """Blur one image (C, H, W) with a spatially varying PSF field (reflect-101 borders)."""
    c, h, w = x.shape
    ys, xs, ks = anchor_kernels(field, h, w)
    p = field.size // 2
    xp = pad_reflect(x, p)
    out = torch.zeros_like(x)
    rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    for i in range(len(ys)):
        r0, r1, wy = _tent(rows, ys, i)
        for j in range(len(xs)):
            c0, c1, wx = _tent(cols, xs, j)
            region = xp[:, r0 : r1 + 1 + 2 * p, c0 : c1 + 1 + 2 * p]
            blurred = filter_valid(region, ks[i, j])
            weight = torch.as_tensor(np.outer(wy, wx), dtype=x.dtype, device=x.device)
            out[:, r0 : r1 + 1, c0 : c1 + 1].add_(blurred * weight)
    return out


def sample_field(rng: np.random.Generator, settings: SpatialBlurSettings) -> PSFField:
    """Draw a PSF field from the spatial-blur ranges."""
    return PSFField(
        sigma_center=float(rng.uniform(*settings.sigma_center)),
        sigma_corner=float(rng.uniform(*settings.sigma_corner)),
        anisotropy=float(rng.uniform(*settings.anisotropy)),
        exponent=settings.exponent,
        size=settings.size,
        grid=settings.grid,
    )
