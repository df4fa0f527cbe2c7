"""Blur kernels from their generating parameters, and their random draws (Real-ESRGAN, §4.1).

Kernels are built in float64 from closed forms on the grid x = (column, row) offsets from the
centre, then normalised to sum 1:

* Gaussian: exp(-½ xᵀΣ⁻¹x), Σ = R(θ) diag(σx², σy²) R(θ)ᵀ;
* generalized Gaussian: exp(-½ (xᵀΣ⁻¹x)^β);
* plateau: 1 / (1 + (xᵀΣ⁻¹x)^β);
* sinc (circular low-pass with cutoff ω_c): ω_c J₁(ω_c r) / (2π r), ω_c² / (4π) at r = 0;
* delta: 1 at the centre.

The draws follow Real-ESRGAN's dataset: size uniform over the odd sizes 7..21; with the sinc
probability a sinc with ω_c ~ U(π/3, π) for sizes < 13 and U(π/5, π) otherwise; else a family by
``kernel_prob``, σx ~ U(blur_sigma), isotropic kernels σy = σx and θ = 0, anisotropic σy ~
U(blur_sigma) and θ ~ U(-π, π); β half from U(β_min, 1), half from U(1, β_max).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special

from inscene.degradations.config import KernelSettings
from inscene.schema import BlurKernel

PAD_TO = 21
"""Size every stage kernel is padded to (Real-ESRGAN pads to the largest size, 21)."""


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    half = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float64) - half
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns (x), yy along rows (y)
    return xx, yy


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """xᵀΣ⁻¹x on the kernel grid, Σ = R(θ) diag(σx², σy²) R(θ)ᵀ."""
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy  # coordinate along the rotated x axis
    v = -s * xx + c * yy  # along the rotated y axis
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> np.ndarray:
    """Normalised bivariate Gaussian."""
    k = np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta))
    return k / k.sum()


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float, theta: float, beta: float
) -> np.ndarray:
    """Normalised generalized Gaussian exp(-½ (xᵀΣ⁻¹x)^β)."""
    k = np.exp(-0.5 * np.power(_quadratic_form(size, sigma_x, sigma_y, theta), beta))
    return k / k.sum()


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """Normalised plateau kernel 1 / (1 + (xᵀΣ⁻¹x)^β)."""
    k = 1.0 / (1.0 + np.power(_quadratic_form(size, sigma_x, sigma_y, theta), beta))
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """Normalised circular low-pass (2-D sinc / Airy) kernel with cutoff ω_c rad/pixel."""
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * math.pi * r)
    k[r == 0] = cutoff**2 / (4 * math.pi)
    return k / k.sum()


def delta_kernel(size: int = 1) -> np.ndarray:
    """The identity kernel."""
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


def pad_kernel(k: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a square odd kernel to ``size`` (no-op when it is at least that large)."""
    p = (size - k.shape[0]) // 2
    return np.pad(k, p) if p > 0 else k


def kernel_array(spec: BlurKernel, pad_to: int = 0) -> np.ndarray:
    """The float64 kernel a :class:`BlurKernel` describes, optionally zero-padded to ``pad_to``."""
    return pad_kernel(_kernel_cached(spec.model_dump_json()), pad_to).copy()


@lru_cache(maxsize=512)
def _kernel_cached(spec_json: str) -> np.ndarray:
    spec = BlurKernel.model_validate_json(spec_json)
    kind, n = spec.kind, spec.size
    if kind == "delta":
        k = delta_kernel(n)
    elif kind == "sinc":
        k = sinc_kernel(n, float(spec.cutoff))
    elif kind in ("iso", "aniso"):
        k = gaussian_kernel(n, spec.sigma_x, spec.sigma_y, spec.rotation)
    elif kind.startswith("generalized"):
        k = generalized_gaussian_kernel(n, spec.sigma_x, spec.sigma_y, spec.rotation, spec.beta)
    else:
        k = plateau_kernel(n, spec.sigma_x, spec.sigma_y, spec.rotation, spec.beta)
    k.setflags(write=False)
    return k


# ---- random draws --------------------------------------------------------------------------


def _beta(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, hi))


def sample_kernel(rng: np.random.Generator, settings: KernelSettings) -> BlurKernel:
    """Draw one stage kernel the way Real-ESRGAN's dataset does."""
    size = int(rng.choice(settings.kernel_sizes))
    if rng.uniform() < settings.sinc_prob:
        lo = math.pi / 3 if size < 13 else math.pi / 5
        return BlurKernel(kind="sinc", size=size, cutoff=float(rng.uniform(lo, math.pi)))
    kind = str(rng.choice(settings.kernel_list, p=np.asarray(settings.kernel_prob)))
    sigma_x = float(rng.uniform(*settings.blur_sigma))
    if kind.endswith("aniso"):
        sigma_y = float(rng.uniform(*settings.blur_sigma))
        rotation = float(rng.uniform(-math.pi, math.pi))
    else:
        sigma_y, rotation = sigma_x, 0.0
    beta = None
    if kind.startswith("generalized"):
        beta = _beta(rng, *settings.betag_range)
    elif kind.startswith("plateau"):
        beta = _beta(rng, *settings.betap_range)
    return BlurKernel(
        kind=kind, size=size, sigma_x=sigma_x, sigma_y=sigma_y, rotation=rotation, beta=beta
    )


def sample_sinc(rng: np.random.Generator, sizes: tuple[int, ...], cutoff: tuple[float, float]) -> BlurKernel:
    """Draw the final sinc filter: size from ``sizes``, ω_c ~ U(cutoff)."""
    size = int(rng.choice(sizes))
    return BlurKernel(kind="sinc", size=size, cutoff=float(rng.uniform(*cutoff)))
