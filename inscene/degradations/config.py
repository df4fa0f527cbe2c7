"""Typed degradation profiles: ranges and probabilities the random draws use.

Two profiles ship:

* ``realesrgan`` (the default): Real-ESRGAN x4's published training configuration,
  xinntao/Real-ESRGAN ``options/train_realesrnet_x4plus.yml`` (the yml's top-level options and its
  ``datasets.train`` kernel options) plus the values hard-coded in BasicSR's Real-ESRNet model and
  Real-ESRGAN dataset (kernel sizes 7..21, sinc cutoffs, the final-step order, 50/50).
* ``s3diff``: the milder ranges S3Diff trains with, ArcticHare105/S3Diff ``configs/sr.yaml``
  (the codebase Face2Scene builds on, §4.1).

Each field's description names its source. Where the paper is silent and we chose, the description
says "our choice".
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inscene.errors import BadInputError

KERNEL_KINDS = (
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso",
)
RESIZE_MODES = ("area", "bilinear", "bicubic")
_ESRNET = "train_realesrnet_x4plus.yml"
_S3DIFF = "S3Diff configs/sr.yaml"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Range = tuple[float, float]


def _check_range(name: str, r: Range, lo: float = -math.inf, hi: float = math.inf) -> None:
    if not (lo <= r[0] <= r[1] <= hi):
        raise ValueError(f"{name} must satisfy {lo} <= low <= high <= {hi}, got {r}")


def _check_probs(name: str, p: tuple[float, ...]) -> None:
    if any(v < 0 for v in p) or abs(sum(p) - 1.0) > 1e-6:
        raise ValueError(f"{name} must be non-negative and sum to 1, got {p}")


class KernelSettings(_Settings):
    """How one stage draws its blur kernel (BasicSR ``random_mixed_kernels`` semantics)."""

    kernel_list: tuple[str, ...] = Field(KERNEL_KINDS, description=f"{_ESRNET}: kernel_list.")
    kernel_prob: tuple[float, ...] = Field(
        (0.45, 0.25, 0.12, 0.03, 0.12, 0.03), description=f"{_ESRNET}: kernel_prob."
    )
    kernel_sizes: tuple[int, ...] = Field(
        (7, 9, 11, 13, 15, 17, 19, 21),
        description="Real-ESRGAN dataset: size uniform over odd 7..21 (blur_kernel_size is unused).",
    )
    sinc_prob: float = Field(0.1, ge=0, le=1, description=f"{_ESRNET}: sinc_prob / sinc_prob2.")
    blur_sigma: Range = Field((0.2, 3.0), description=f"{_ESRNET}: blur_sigma (stage 1).")
    betag_range: Range = Field((0.5, 4.0), description=f"{_ESRNET}: betag_range.")
    betap_range: Range = Field((1.0, 2.0), description=f"{_ESRNET}: betap_range.")

    @model_validator(mode="after")
    def _valid(self) -> KernelSettings:
        if len(self.kernel_list) != len(self.kernel_prob) or not self.kernel_list:
            raise ValueError("kernel_list and kernel_prob must have the same non-zero length")
        unknown = set(self.kernel_list) - set(KERNEL_KINDS)
        if unknown:
            raise ValueError(f"unknown kernel kinds {sorted(unknown)}; known: {KERNEL_KINDS}")
        _check_probs("kernel_prob", self.kernel_prob)
        if not self.kernel_sizes or any(k % 2 != 1 or not 1 <= k <= 41 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd in 1..41, got {self.kernel_sizes}")
        _check_range("blur_sigma", self.blur_sigma, 1e-3, 50)
        _check_range("betag_range", self.betag_range, 1e-3, 10)
        _check_range("betap_range", self.betap_range, 1e-3, 10)
        if not (self.betag_range[0] <= 1 <= self.betag_range[1]):
            raise ValueError("betag_range must contain 1 (β is drawn half below 1, half above)")
        if not (self.betap_range[0] <= 1 <= self.betap_range[1]):
            raise ValueError("betap_range must contain 1 (β is drawn half below 1, half above)")
        return self


class StageSettings(_Settings):
    """One degradation stage: blur, resize, noise, JPEG."""

    kernel: KernelSettings = Field(default_factory=KernelSettings)
    blur_prob: float = Field(
        1.0, ge=0, le=1, description="Stage 1 always blurs; stage 2: second_blur_prob."
    )
    resize_prob: tuple[float, float, float] = Field(
        (0.2, 0.7, 0.1), description=f"{_ESRNET}: resize_prob (up, down, keep)."
    )
    resize_range: Range = Field((0.15, 1.5), description=f"{_ESRNET}: resize_range.")
    resize_modes: tuple[str, ...] = Field(
        RESIZE_MODES, description="Real-ESRNet model: mode uniform over area/bilinear/bicubic."
    )
    gaussian_noise_prob: float = Field(
        0.5, ge=0, le=1, description=f"{_ESRNET}: gaussian_noise_prob (else Poisson)."
    )
    noise_range: Range = Field((1.0, 30.0), description=f"{_ESRNET}: noise_range (0-255 units).")
    poisson_scale_range: Range = Field((0.05, 3.0), description=f"{_ESRNET}: poisson_scale_range.")
    gray_noise_prob: float = Field(0.4, ge=0, le=1, description=f"{_ESRNET}: gray_noise_prob.")
    jpeg_range: tuple[int, int] = Field(
        (30, 95), description=f"{_ESRNET}: jpeg_range (integer qualities, inclusive)."
    )

    @model_validator(mode="after")
    def _valid(self) -> StageSettings:
        _check_probs("resize_prob", self.resize_prob)
        _check_range("resize_range", self.resize_range, 1e-3, 16)
        if not (self.resize_range[0] <= 1 <= self.resize_range[1]):
            raise ValueError("resize_range must contain 1 (down draws below 1, up above)")
        if not self.resize_modes or set(self.resize_modes) - set(RESIZE_MODES):
            raise ValueError(f"resize_modes must be a subset of {RESIZE_MODES}")
        _check_range("noise_range", self.noise_range, 0, 255)
        _check_range("poisson_scale_range", self.poisson_scale_range, 0, 100)
        _check_range("jpeg_range", self.jpeg_range, 1, 100)
        return self


class SpatialBlurSettings(_Settings):
    """Ranges of the spatially varying first blur (§9.8). The paper gives no numbers: our choice."""

    sigma_center: Range = Field((0.2, 1.0), description="σ at the centre (our choice: mild).")
    sigma_corner: Range = Field(
        (2.0, 3.0), description="σ at the corners (our choice: up to stage 1's largest σ, 3.0)."
    )
    anisotropy: Range = Field((1.0, 2.0), description="Radial elongation at the corners (our choice).")
    exponent: float = Field(2.0, gt=0, description="Blur grows with r² (our choice).")
    size: int = Field(21, description="PSF size: the largest Real-ESRGAN kernel.")
    grid: int = Field(8, ge=2, le=32, description="Anchor PSFs per side (our choice).")

    @model_validator(mode="after")
    def _valid(self) -> SpatialBlurSettings:
        _check_range("sigma_center", self.sigma_center, 1e-3, 50)
        _check_range("sigma_corner", self.sigma_corner, 1e-3, 50)
        _check_range("anisotropy", self.anisotropy, 1, 10)
        if self.size % 2 != 1:
            raise ValueError("size must be odd")
        return self


class DegradationProfile(_Settings):
    """A complete set of ranges for :func:`inscene.degradations.sample_params`."""

    name: str = Field("realesrgan", description="Profile name, recorded in every DegradationParams.")
    scale: int = Field(4, ge=1, le=16, description=f"{_ESRNET}: scale 4.")
    output: Literal["gt", "lq"] = Field(
        "gt",
        description="InScene stores LQs resized back to the GT size with bicubic, as S3Diff's "
        "degradation_proc does (resize_lq=True): the paper restores at native resolution and "
        "detects faces in the LQ in scene coordinates (§3.1). 'lq' keeps GT/scale.",
    )
    usm: bool = Field(
        False,
        description="Unsharp-mask the input first. Real-ESRNet's yml sets gt_usm: True, but it "
        "sharpens its training target too; InScene keeps the unsharpened HQ as the target, and "
        "S3Diff's degradation_proc defaults to use_usm=False: off (our choice).",
    )
    stage1: StageSettings = Field(default_factory=StageSettings)
    stage2: StageSettings = Field(
        default_factory=lambda: StageSettings(
            kernel=KernelSettings(blur_sigma=(0.2, 1.5)),
            blur_prob=0.8,
            resize_prob=(0.3, 0.4, 0.3),
            resize_range=(0.3, 1.2),
            noise_range=(1.0, 25.0),
            poisson_scale_range=(0.05, 2.5),
            jpeg_range=(30, 95),
        ),
        description=f"{_ESRNET}: blur_sigma2 [0.2, 1.5], second_blur_prob 0.8, resize_prob2 "
        "[0.3, 0.4, 0.3], resize_range2 [0.3, 1.2], noise_range2 [1, 25], poisson_scale_range2 "
        "[0.05, 2.5], jpeg_range2 [30, 95] (stage 2's JPEG is applied in the final step).",
    )
    final_sinc_prob: float = Field(0.8, ge=0, le=1, description=f"{_ESRNET}: final_sinc_prob.")
    final_sinc_cutoff: Range = Field(
        (math.pi / 3, math.pi), description="Real-ESRGAN dataset: final sinc ω_c ~ U(π/3, π)."
    )
    final_order_prob: float = Field(
        0.5, ge=0, le=1,
        description="Real-ESRNet model: P([resize + sinc] then JPEG); else JPEG then [resize + sinc].",
    )
    no_degradation_prob: float = Field(0.0, ge=0, le=1, description="Real-ESRGAN: none.")
    spatial_blur: SpatialBlurSettings | None = Field(
        None, description="Replace stage 1's blur by a spatially varying PSF field (§9.8)."
    )

    @model_validator(mode="after")
    def _valid(self) -> DegradationProfile:
        _check_range("final_sinc_cutoff", self.final_sinc_cutoff, 1e-3, math.pi)
        return self


def _s3diff() -> DegradationProfile:
    k1 = KernelSettings(blur_sigma=(0.2, 1.5), betag_range=(0.5, 2.0), betap_range=(1.0, 1.5))
    k2 = KernelSettings(blur_sigma=(0.2, 1.0), betag_range=(0.5, 2.0), betap_range=(1.0, 1.5))
    return DegradationProfile(
        name="s3diff",
        stage1=StageSettings(
            kernel=k1, resize_range=(0.3, 1.5), noise_range=(1.0, 15.0),
            poisson_scale_range=(0.05, 2.0), jpeg_range=(60, 95),
        ),
        stage2=StageSettings(
            kernel=k2, blur_prob=0.5, resize_prob=(0.3, 0.4, 0.3), resize_range=(0.6, 1.2),
            noise_range=(1.0, 12.0), poisson_scale_range=(0.05, 1.0), jpeg_range=(60, 100),
        ),
        no_degradation_prob=0.01,
    )


#: Profile name -> profile. ``s3diff`` values: ArcticHare105/S3Diff configs/sr.yaml (stage 1:
#: resize [0.3, 1.5], noise [1, 15], poisson [0.05, 2.0], JPEG [60, 95], blur_sigma [0.2, 1.5],
#: betag [0.5, 2.0], betap [1, 1.5]; stage 2: second_blur_prob 0.5, resize [0.6, 1.2], noise [1, 12],
#: poisson [0.05, 1.0], JPEG [60, 100], blur_sigma2 [0.2, 1.0]; no_degradation_prob 0.01).
PROFILES: dict[str, DegradationProfile] = {
    "realesrgan": DegradationProfile(),
    "s3diff": _s3diff(),
}


def get_profile(name: str | DegradationProfile) -> DegradationProfile:
    """A profile by name (``realesrgan``, ``s3diff``), or the profile itself."""
    if isinstance(name, DegradationProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise BadInputError(
            f"unknown degradation profile {name!r}; known: {', '.join(PROFILES)}"
        ) from None
