"""Torch image operations of the degradation pipeline: padding, filtering, resizing, sharpening.

Images are float32 tensors (B, C, H, W) in [0, 1] on any device. Filtering is correlation with
point-symmetric kernels (so it equals convolution), with reflect-101 borders (BasicSR's
``filter2D`` pads with torch's 'reflect', the same rule). Unlike torch's reflect padding, ours
also works when the pad is wider than the image (the mirror pattern repeats), so images smaller
than the 21-px kernels are filtered rather than rejected.

On CPU each sample is filtered with its own kernel by shifted multiply-adds: a kernel that is
(numerically) low-rank is applied as r separable passes (SVD), else tap by tap, whichever is
cheaper. An isotropic Gaussian is rank 1, so its 21x21 filter costs 42 passes instead of 441.
The SVD is truncated only where the dropped terms change no output by more than 1e-6 (well below
half an 8-bit step, 2e-3). On CUDA a grouped ``conv2d`` filters all samples of the tensor it is
given at once (the degradation pipeline passes one image at a time, so there it groups the three
channels of that image).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

_SVD_TOL = 1e-6


def reflect_index(n: int, pad: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source index of each of the ``n + 2*pad`` positions of a reflect-101 padded axis."""
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def pad_reflect(x: torch.Tensor, pad_h: int, pad_w: int | None = None) -> torch.Tensor:
    """Reflect-101 pad the last two dims by ``pad_h`` rows and ``pad_w`` columns (any size)."""
    pad_w = pad_h if pad_w is None else pad_w
    h, w = x.shape[-2:]
    if pad_h <= h - 1 and pad_w <= w - 1:
        if pad_h == 0 and pad_w == 0:
            return x
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    x = x.index_select(-2, reflect_index(h, pad_h, x.device))
    return x.index_select(-1, reflect_index(w, pad_w, x.device))


def _trim(k: np.ndarray) -> np.ndarray:
    """Drop all-zero outer rings of a square odd kernel (padded kernels)."""
    n = k.shape[0]
    while n > 1:
        if np.any(k[0]) or np.any(k[-1]) or np.any(k[:, 0]) or np.any(k[:, -1]):
            break
        k = k[1:-1, 1:-1]
        n -= 2
    return k


@lru_cache(maxsize=1024)
def _plan(key: bytes, n: int) -> tuple[str, tuple]:
    """How to apply a kernel on CPU: ('sep', ((col, row), ...)) or ('direct', ((i, j, w), ...))."""
    k = np.frombuffer(key, dtype=np.float64).reshape(n, n)
    u, s, vt = np.linalg.svd(k)
    # smallest rank whose dropped terms bound the output error by _SVD_TOL for inputs in [0, 1]
    bound = np.abs(u).sum(0) * s * np.abs(vt).sum(1)
    tail = np.concatenate([np.cumsum(bound[::-1])[::-1], [0.0]])
    rank = int(np.argmax(tail <= _SVD_TOL))
    taps = [(i, j, float(k[i, j])) for i in range(n) for j in range(n) if k[i, j] != 0.0]
    if rank == 0:
        return "direct", ()
    if 2 * n * rank < len(taps):
        factors = tuple(
            (tuple(float(v) for v in u[:, r] * s[r]), tuple(float(v) for v in vt[r])) for r in range(rank)
        )
        return "sep", factors
    return "direct", tuple(taps)


def filter_valid_cpu(xp: torch.Tensor, k: np.ndarray) -> torch.Tensor:
    """'Valid' correlation of a pre-padded (C, H + n - 1, W + n - 1) tensor with an n x n kernel."""
    n = k.shape[0]
    h, w = xp.shape[-2] - n + 1, xp.shape[-1] - n + 1
    kt = _trim(np.ascontiguousarray(k, dtype=np.float64))
    m = kt.shape[0]
    off = (n - m) // 2
    if off:
        xp = xp[..., off : xp.shape[-2] - off, off : xp.shape[-1] - off]
    if m == 1:
        return xp * float(kt[0, 0])
    how, plan = _plan(kt.tobytes(), m)
    out = torch.zeros((*xp.shape[:-2], h, w), dtype=xp.dtype, device=xp.device)
    if how == "direct":
        for i, j, wgt in plan:
            out.add_(xp[..., i : i + h, j : j + w], alpha=wgt)
        return out
    tmp = torch.empty((*xp.shape[:-2], h, xp.shape[-1]), dtype=xp.dtype, device=xp.device)
    for col, row in plan:
        tmp.zero_()
        for i, wgt in enumerate(col):
            if wgt != 0.0:
                tmp.add_(xp[..., i : i + h, :], alpha=wgt)
        for j, wgt in enumerate(row):
            if wgt != 0.0:
                out.add_(tmp[..., :, j : j + w], alpha=wgt)
    return out


def filter_valid(xp: torch.Tensor, k: np.ndarray) -> torch.Tensor:
    """'Valid' correlation of one pre-padded sample (C, H', W') with one kernel, any device."""
    if xp.device.type == "cpu":
        return filter_valid_cpu(xp, k)
    return filter_valid_conv(xp, k)


def filter_valid_conv(xp: torch.Tensor, k: np.ndarray) -> torch.Tensor:
    """:func:`filter_valid` with ``conv2d`` (the CUDA path)."""
    c, n = xp.shape[0], k.shape[0]
    weight = torch.as_tensor(k, dtype=xp.dtype, device=xp.device)[None, None].expand(c, 1, n, n)
    return F.conv2d(xp[None], weight, groups=c)[0]


def _filter_one_cpu(x: torch.Tensor, k: np.ndarray) -> torch.Tensor:
    """Filter one sample (C, H, W) with one kernel by shifted multiply-adds."""
    k = _trim(np.ascontiguousarray(k, dtype=np.float64))
    return filter_valid_cpu(pad_reflect(x, k.shape[0] // 2), k)


def filter2d(x: torch.Tensor, kernels: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """Filter each sample of ``x`` (B, C, H, W) with its own kernel (reflect-101 borders).

    Args:
        x: float images.
        kernels: one square odd kernel per sample (or one kernel for all).

    Returns:
        The filtered images, same shape, dtype and device.
    """
    b = x.shape[0]
    if isinstance(kernels, np.ndarray) and kernels.ndim == 2:
        kernels = [kernels] * b
    if len(kernels) != b:
        raise ValueError(f"{len(kernels)} kernels for {b} images")
    if x.device.type == "cpu":
        return torch.stack([_filter_one_cpu(x[i], kernels[i]) for i in range(b)])
    return filter_conv(x, kernels)


def filter_conv(x: torch.Tensor, kernels: list[np.ndarray]) -> torch.Tensor:
    """The batched path (CUDA): one grouped ``conv2d`` over all samples and channels."""
    b = x.shape[0]
    n = max(k.shape[0] for k in kernels)
    ks = np.stack([np.pad(k, (n - k.shape[0]) // 2) for k in kernels])
    c, h, w = x.shape[1:]
    weight = torch.as_tensor(ks, dtype=x.dtype, device=x.device)
    weight = weight[:, None].expand(b, c, n, n).reshape(b * c, 1, n, n)
    xp = pad_reflect(x, n // 2).reshape(1, b * c, h + n - 1, w + n - 1)
    return F.conv2d(xp, weight, groups=b * c).reshape(b, c, h, w)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize to ``size`` = (H, W) with torch's area / bilinear / bicubic (no antialias)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def scaled_size(h: int, w: int, factor: float) -> tuple[int, int]:
    """``(int(h * factor), int(w * factor))`` clamped to at least 1 px (documented clamp)."""
    return max(1, int(h * factor)), max(1, int(w * factor))


@lru_cache(maxsize=4)
def _usm_kernel(radius: int) -> np.ndarray:
    # OpenCV's sigma for ksize with sigma=0: 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    sigma = 0.3 * ((radius - 1) * 0.5 - 1) + 0.8
    ax = np.arange(radius) - (radius - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma * sigma))
    g /= g.sum()
    return np.outer(g, g)


def usm_sharpen(x: torch.Tensor, weight: float = 0.5, radius: int = 51, threshold: float = 10) -> torch.Tensor:
    """Unsharp masking as Real-ESRNet applies it to its GT (``gt_usm``): a 51-px Gaussian, a
    soft mask where the residual exceeds 10/255, blended: mask·clip(x + w·(x − blur)) + (1 − mask)·x.
    """
    if radius % 2 == 0:
        radius += 1
    k = _usm_kernel(radius)
    blur = filter2d(x, [k] * x.shape[0])
    residual = x - blur
    mask = (residual.abs() * 255 > threshold).to(x.dtype)
    soft = filter2d(mask, [k] * x.shape[0])
    sharp = (x + weight * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits: ``clamp(round(255 x), 0, 255)`` as uint8 (NaN-free input assumed)."""
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid, staying float: ``clamp(round(255 x), 0, 255) / 255``."""
    return (x * 255.0).round().clamp(0, 255) / 255.0


def finite_or_raise(x: torch.Tensor, what: str) -> torch.Tensor:
    """Guard: raise if ``x`` has NaN/Inf (a bug, never expected)."""
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"non-finite values after {what}")
    return x

