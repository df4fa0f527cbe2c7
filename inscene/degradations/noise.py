"""Seeded Gaussian and Poisson noise (Real-ESRGAN's noise models, §4.1).

Every noise draw comes from its own ``torch.Generator`` seeded with the spec's seed, on the
image's device. A Gaussian spec at one size gives the same field whatever the image (the "same G"
FaDeX pairs need); Poisson noise depends on the image by definition (its rates are the pixel
values), but is drawn from the same seeded stream. Draws of different samples in a batch are
independent (unlike BasicSR, whose gray Gaussian noise shares one pattern across the batch).
Replay is bit-exact on the same device type; CPU and CUDA draw different (equally distributed) values.

Gaussian: ``x + σ/255 · N(0, 1)``, one field per channel, or one field for all three (gray).

Poisson (BasicSR's model): the image is quantised to 8 bits; ``vals = 2^ceil(log2(L))`` where L
is the number of distinct 8-bit values in the image (of its luma for gray noise); the noise is
``(Poisson(q · vals) / vals − q) · scale`` with q the quantised image, added to the unquantised
input. Poisson variates are drawn with ``torch.poisson`` (rates ``q · vals``, float32) from the
spec's seeded generator; rate 0 (black) draws 0, so black pixels get exactly zero noise, never NaN.
Gray luma uses ITU-R 601 weights (0.2989, 0.587, 0.114) as torchvision's ``rgb_to_grayscale``.
"""

from __future__ import annotations

import math

import torch

from inscene.schema import NoiseSpec

_LUMA = (0.2989, 0.587, 0.114)


def generator(seed: int, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def gaussian_field(spec: NoiseSpec, shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """The noise a Gaussian spec adds to a (C, H, W) image, in [0, 1] units."""
    c, h, w = shape
    g = generator(spec.seed, device)
    n = torch.randn((1 if spec.gray else c, h, w), generator=g, device=device)
    n.mul_(float(spec.sigma) / 255.0)
    return n.expand(c, h, w) if spec.gray else n


def _levels(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round().clamp(0, 255).to(torch.int64)


def poisson_noise(x: torch.Tensor, spec: NoiseSpec) -> torch.Tensor:
    """The noise a Poisson spec adds to one (C, H, W) image, in [0, 1] units."""
    g = generator(spec.seed, x.device)
    if spec.gray and x.shape[0] == 3:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device)[:, None, None]
        src = (x * w).sum(0, keepdim=True)
    else:
        src = x
    levels = _levels(src)
    distinct = int(torch.count_nonzero(torch.bincount(levels.flatten(), minlength=256)))
    vals = float(2 ** math.ceil(math.log2(max(distinct, 1))))
    counts = torch.poisson(levels.to(torch.float32) * (vals / 255.0), generator=g)
    noise = (counts / vals - levels.to(torch.float32) / 255.0) * float(spec.scale)
    return noise.expand_as(x) if noise.shape[0] != x.shape[0] else noise


def add_noise(x: torch.Tensor, spec: NoiseSpec) -> torch.Tensor:
    """``clamp(x + noise, 0, 1)`` for one (C, H, W) image (BasicSR: clip=True, rounds=False)."""
    if spec.kind == "gaussian":
        noise = gaussian_field(spec, tuple(x.shape), x.device)
    else:
        noise = poisson_noise(x, spec)
    return (x + noise).clamp_(0, 1)
