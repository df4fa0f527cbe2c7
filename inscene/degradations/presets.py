"""The four fixed degradation presets d1–d4 of the FaDeX cosine-similarity experiment (§7.4).

§7.4 describes each preset in words ("strong downscale", "low JPEG"...) and says every preset uses
the standard two-stage Real-ESRGAN pipeline with all hyper-parameters fixed. The numbers below are
our reading of those words inside the Real-ESRGAN ranges (strong = near a range's end, mild = near
its start); noise seeds are fixed, so each preset is one reproducible operator.

Scale: d3 "keeps the original resolution" in both stages and is an "almost-clean identity", which
the x4 pipeline cannot be (its final step resizes to GT/4). The presets therefore run at scale 1:
stage 2's factor and the final resize are relative to the GT size, so "keeps the resolution" means
factor 1 (d3) or staying at stage 1's size (d1), and every preset's output is at GT size.

* d1 — strong downscale + strong blur + high JPEG. Stage 1: isotropic Gaussian σ=3.0 (21 px),
  downscale ×0.25 (area), gray Gaussian noise σ=8 then Poisson (scale 1.0), JPEG 90. Stage 2: keeps
  stage 1's resolution (×0.25), milder isotropic blur σ=1.0, no noise; final: JPEG 95 ("very
  high"), then resize to GT (bicubic) and a sinc filter (ω_c=π/2).
* d2 — strong upscale + low JPEG, then downscale + anisotropic blur. Stage 1: anisotropic
  Gaussian (σ 2.0/0.6, θ=π/4), upscale ×1.5 (bicubic), colour Poisson (scale 2.5), JPEG 40.
  Stage 2: anisotropic blur (σ 1.2/0.4, θ=−π/3), downscale to ×0.6 of GT (area), colour Poisson
  (scale 2.0); final: resize to GT (bicubic), no sinc, JPEG 55 ("low–mid").
* d3 — almost-clean identity with sinc filtering. Stage 1: sinc (ω_c=0.8π, 21 px), keep, Poisson
  (scale 0.05, "minimal"), no Gaussian noise, JPEG 100. Stage 2: keep, colour Gaussian σ=1 ("very
  small"); final: sinc (ω_c=0.9π) and JPEG 100 ("maximum quality").
* d4 — moderate downscale + light noise + very low JPEG, then upscale + plateau blur. Stage 1:
  plateau-anisotropic (σ 2.0/0.8, θ=π/6, β=1.5), downscale ×0.6 (area), colour Gaussian σ=5
  ("light"), Poisson scale 0.5 ("mild"), JPEG 30 ("very low", the range's end). Stage 2:
  plateau-anisotropic (σ 1.2/0.5, θ=−π/4, β=1.2), upscale to ×0.9 of GT (bicubic), no noise;
  final: resize to GT (bicubic) + sinc (ω_c=π/2), JPEG 30.
"""

from __future__ import annotations

import math

from inscene.errors import BadInputError
from inscene.schema import (
    BlurKernel,
    DegradationParams,
    DegradationStage,
    FinalStep,
    NoiseSpec,
    PSFField,
    ResizeSpec,
)

PI = math.pi


def _iso(sigma: float, size: int = 21) -> BlurKernel:
    return BlurKernel(kind="iso", size=size, sigma_x=sigma, sigma_y=sigma)


def _d1() -> DegradationParams:
    return DegradationParams(
        pipeline="d1", scale=1, output="gt",
        stage1=DegradationStage(
            blur=_iso(3.0), resize=ResizeSpec(factor=0.25, mode="area"),
            noise=[NoiseSpec(kind="gaussian", gray=True, sigma=8.0, seed=7401),
                   NoiseSpec(kind="poisson", gray=False, scale=1.0, seed=7402)],
            jpeg_quality=90,
        ),
        stage2=DegradationStage(blur=_iso(1.0, 11), resize=ResizeSpec(factor=0.25, mode="area")),
        final=FinalStep(
            order="jpeg_resize_sinc", resize_mode="bicubic",
            sinc=BlurKernel(kind="sinc", size=15, cutoff=PI / 2), jpeg_quality=95,
        ),
    )


def _d2() -> DegradationParams:
    return DegradationParams(
        pipeline="d2", scale=1, output="gt",
        stage1=DegradationStage(
            blur=BlurKernel(kind="aniso", size=21, sigma_x=2.0, sigma_y=0.6, rotation=PI / 4),
            resize=ResizeSpec(factor=1.5, mode="bicubic"),
            noise=[NoiseSpec(kind="poisson", gray=False, scale=2.5, seed=7403)],
            jpeg_quality=40,
        ),
        stage2=DegradationStage(
            blur=BlurKernel(kind="aniso", size=15, sigma_x=1.2, sigma_y=0.4, rotation=-PI / 3),
            resize=ResizeSpec(factor=0.6, mode="area"),
            noise=[NoiseSpec(kind="poisson", gray=False, scale=2.0, seed=7404)],
        ),
        final=FinalStep(order="resize_sinc_jpeg", resize_mode="bicubic", sinc=None, jpeg_quality=55),
    )


def _d3() -> DegradationParams:
    return DegradationParams(
        pipeline="d3", scale=1, output="gt",
        stage1=DegradationStage(
            blur=BlurKernel(kind="sinc", size=21, cutoff=0.8 * PI),
            resize=ResizeSpec(factor=1.0, mode="bicubic"),
            noise=[NoiseSpec(kind="poisson", gray=False, scale=0.05, seed=7405)],
            jpeg_quality=100,
        ),
        stage2=DegradationStage(
            resize=ResizeSpec(factor=1.0, mode="bicubic"),
            noise=[NoiseSpec(kind="gaussian", gray=False, sigma=1.0, seed=7406)],
        ),
        final=FinalStep(
            order="resize_sinc_jpeg", resize_mode="bicubic",
            sinc=BlurKernel(kind="sinc", size=21, cutoff=0.9 * PI), jpeg_quality=100,
        ),
    )


def _d4() -> DegradationParams:
    return DegradationParams(
        pipeline="d4", scale=1, output="gt",
        stage1=DegradationStage(
            blur=BlurKernel(
                kind="plateau_aniso", size=21, sigma_x=2.0, sigma_y=0.8, rotation=PI / 6, beta=1.5
            ),
            resize=ResizeSpec(factor=0.6, mode="area"),
            noise=[NoiseSpec(kind="gaussian", gray=False, sigma=5.0, seed=7407),
                   NoiseSpec(kind="poisson", gray=False, scale=0.5, seed=7408)],
            jpeg_quality=30,
        ),
        stage2=DegradationStage(
            blur=BlurKernel(
                kind="plateau_aniso", size=15, sigma_x=1.2, sigma_y=0.5, rotation=-PI / 4, beta=1.2
            ),
            resize=ResizeSpec(factor=0.9, mode="bicubic"),
        ),
        final=FinalStep(
            order="resize_sinc_jpeg", resize_mode="bicubic",
            sinc=BlurKernel(kind="sinc", size=15, cutoff=PI / 2), jpeg_quality=30,
        ),
    )


PRESETS = {"d1": _d1, "d2": _d2, "d3": _d3, "d4": _d4}

#: Field used when a preset is asked for with the spatially varying first blur (§9.8).
DEFAULT_PSF_FIELD = PSFField(sigma_center=0.5, sigma_corner=3.0, anisotropy=1.5, exponent=2.0)


def preset(name: str, *, spatial_blur: bool = False, output: str | None = None) -> DegradationParams:
    """The fixed parameters of preset ``name`` (d1..d4).

    Args:
        name: ``d1``, ``d2``, ``d3`` or ``d4``.
        spatial_blur: replace stage 1's blur by :data:`DEFAULT_PSF_FIELD` (§9.8).
        output: ``gt`` or ``lq`` (identical at scale 1; kept for a uniform interface).
    """
    try:
        params = PRESETS[name]()
    except KeyError:
        raise BadInputError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
    if spatial_blur:
        stage1 = params.stage1.model_copy(update={"blur": None, "psf_field": DEFAULT_PSF_FIELD})
        params = params.model_copy(update={"stage1": stage1, "pipeline": f"{name}+spatial"})
    if output is not None:
        params = params.model_copy(update={"output": output})
    return DegradationParams.model_validate(params.model_dump())
