"""The Real-ESRGAN high-order degradation as replayable parameters (§3.2, §4.1).

Sampling is separate from applying:

* :func:`sample_params` draws a :class:`~inscene.schema.DegradationParams` (kernels by their
  generating parameters, resize factors and modes, noise kinds, levels and seeds, JPEG qualities,
  the final-step order) from a profile's ranges. It serialises to JSON and is stored with every LQ.
* :func:`apply` runs the operator those parameters describe; it is deterministic, so applying one
  record to two images applies the same G (what FaDeX's training pairs need), and it takes
  per-sample parameters inside a batch (Real-ESRGAN draws some choices once per batch).

What "batch" means here: :func:`apply` accepts a batch (a list of arrays or a (B, 3, H, W)
tensor, on CPU or CUDA) with one parameter record per image, but the torch steps (USM, blurs,
resizes, noise, sinc) run image by image, each on a (1, 3, H, W) tensor on the chosen device;
only the two JPEG steps work across the batch, compressing its images concurrently on a thread
pool (Pillow releases the GIL). Per-image processing is what per-sample kernels, sizes and noise
need; there is no fused batched kernel.

The order is Real-ESRNet's ``feed_data``: [USM] → blur1 → resize1 (× factor of the current size)
→ noise1 → clamp → JPEG1 → [blur2] → resize2 (to GT/scale × factor) → noise2 → final step, either
[resize to GT/scale → sinc] → clamp → JPEG2 or clamp → JPEG2 → [resize → sinc]; then clamp and
round to 8 bits. InScene LQs are then resized back to the GT size with bicubic (``output="gt"``,
S3Diff's ``resize_lq``), because the paper restores at native resolution and Stage I detects faces
in the LQ in scene coordinates (§3.1); ``output="lq"`` keeps the GT/scale image.

Differences from BasicSR, on purpose: JPEG is real libjpeg at integer qualities on 8-bit input
(not DiffJPEG at float qualities); every random choice is per sample; sizes are clamped to at
least 1 px; borders are reflect-101 for any image size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from inscene.degradations import jpeg as jpeg_mod
from inscene.degradations.config import DegradationProfile, StageSettings, get_profile
from inscene.degradations.kernels import PAD_TO, kernel_array, sample_kernel, sample_sinc
from inscene.degradations.noise import add_noise
from inscene.degradations.ops import (
    filter2d,
    quantize,
    resize,
    scaled_size,
    usm_sharpen,
)
from inscene.degradations.spatial import apply_psf_field, sample_field
from inscene.errors import BadInputError
from inscene.schema import (
    SCHEMA_VERSION,
    DegradationParams,
    DegradationStage,
    FinalStep,
    NoiseSpec,
    ResizeSpec,
)

_SEED_LIMIT = 2**53


# ---- sampling --------------------------------------------------------------------------------


def _rng(seed: np.random.Generator | int | None) -> tuple[np.random.Generator, int | None]:
    if isinstance(seed, np.random.Generator):
        return seed, None
    if seed is None:
        seed = int(np.random.default_rng().integers(0, _SEED_LIMIT))
    if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < _SEED_LIMIT:
        raise BadInputError(f"seed must be an integer in [0, 2**53), got {seed!r}")
    return np.random.default_rng(int(seed)), int(seed)


def _sample_stage(
    rng: np.random.Generator, st: StageSettings, *, jpeg: bool, profile: DegradationProfile, first: bool
) -> DegradationStage:
    blur = sample_kernel(rng, st.kernel) if rng.uniform() < st.blur_prob else None
    field = None
    if first and profile.spatial_blur is not None:
        blur, field = None, sample_field(rng, profile.spatial_blur)
    direction = int(rng.choice(3, p=np.asarray(st.resize_prob)))  # up, down, keep
    if direction == 0:
        factor = float(rng.uniform(1.0, st.resize_range[1]))
    elif direction == 1:
        factor = float(rng.uniform(st.resize_range[0], 1.0))
    else:
        factor = 1.0
    mode = str(rng.choice(st.resize_modes))
    gaussian = rng.uniform() < st.gaussian_noise_prob
    gray = bool(rng.uniform() < st.gray_noise_prob)
    seed = int(rng.integers(0, _SEED_LIMIT))
    if gaussian:
        noise = NoiseSpec(kind="gaussian", gray=gray, sigma=float(rng.uniform(*st.noise_range)), seed=seed)
    else:
        noise = NoiseSpec(
            kind="poisson", gray=gray, scale=float(rng.uniform(*st.poisson_scale_range)), seed=seed
        )
    quality = int(rng.integers(st.jpeg_range[0], st.jpeg_range[1] + 1)) if jpeg else None
    return DegradationStage(
        blur=blur, psf_field=field, resize=ResizeSpec(factor=factor, mode=mode), noise=[noise],
        jpeg_quality=quality,
    )


def sample_params(
    seed: np.random.Generator | int | None = None,
    profile: str | DegradationProfile = "realesrgan",
    *,
    spatial_blur: bool = False,
    output: str | None = None,
) -> DegradationParams:
    """Draw one degradation operator.

    Args:
        seed: an integer seed (recorded, so ``sample_params(p.seed, profile) == p``), a numpy
            ``Generator``, or None for a fresh random seed.
        profile: ``realesrgan`` (Real-ESRGAN x4's training configuration), ``s3diff``, or a
            :class:`~inscene.degradations.config.DegradationProfile`.
        spatial_blur: replace stage 1's blur by a spatially varying PSF field (§9.8), drawn from
            the profile's ``spatial_blur`` ranges (or the defaults).
        output: ``gt`` (resize the LQ back to the GT size) or ``lq``; default: the profile's.

    Returns:
        The parameters, JSON-serialisable (``params.model_dump_json()``).
    """
    prof = get_profile(profile)
    if spatial_blur and prof.spatial_blur is None:
        from inscene.degradations.config import SpatialBlurSettings

        prof = prof.model_copy(update={"spatial_blur": SpatialBlurSettings()})
    rng, recorded = _rng(seed)
    common: dict[str, Any] = {
        "pipeline": prof.name + ("+spatial" if prof.spatial_blur is not None else ""),
        "seed": recorded,
        "scale": prof.scale,
        "output": output or prof.output,
        "usm": prof.usm,
    }
    if rng.uniform() < prof.no_degradation_prob:
        return DegradationParams(identity=True, **common)
    stage1 = _sample_stage(rng, prof.stage1, jpeg=True, profile=prof, first=True)
    stage2 = _sample_stage(rng, prof.stage2, jpeg=False, profile=prof, first=False)
    order = "resize_sinc_jpeg" if rng.uniform() < prof.final_order_prob else "jpeg_resize_sinc"
    mode = str(rng.choice(prof.stage2.resize_modes))
    sinc = None
    if rng.uniform() < prof.final_sinc_prob:
        sinc = sample_sinc(rng, prof.stage1.kernel.kernel_sizes, prof.final_sinc_cutoff)
    quality = int(rng.integers(prof.stage2.jpeg_range[0], prof.stage2.jpeg_range[1] + 1))
    final = FinalStep(order=order, resize_mode=mode, sinc=sinc, jpeg_quality=quality)
    return DegradationParams(stage1=stage1, stage2=stage2, final=final, **common)


# ---- loading and checking ----------------------------------------------------------------------


def load_params(data: str | bytes | dict[str, Any] | DegradationParams) -> DegradationParams:
    """Parse and check a params record (JSON text, bytes or dict).

    Raises:
        BadInputError: invalid JSON, another schema version, out-of-range values, or a record
            that does not describe a complete operator.
    """
    if isinstance(data, DegradationParams):
        params = data
    else:
        try:
            obj = json.loads(data) if isinstance(data, (str, bytes, bytearray)) else dict(data)
        except (ValueError, TypeError) as exc:
            raise BadInputError(f"degradation params are not JSON: {exc}") from None
        version = obj.get("schema_version", SCHEMA_VERSION) if isinstance(obj, dict) else None
        if version != SCHEMA_VERSION:
            raise BadInputError(
                f"degradation params have schema_version {version!r}; this inscene reads version "
                f"{SCHEMA_VERSION}: re-sample them (sample_params with the recorded seed)"
            )
        try:
            params = DegradationParams.model_validate(obj)
        except ValidationError as exc:
            raise BadInputError(f"invalid degradation params: {_first_errors(exc)}") from None
    check_params(params)
    return params


def _first_errors(exc: ValidationError, n: int = 3) -> str:
    parts = []
    for err in exc.errors()[:n]:
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - n
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def check_params(params: DegradationParams) -> None:
    """Raise :class:`BadInputError` unless ``params`` is a complete operator of this version."""
    if not isinstance(params, DegradationParams):
        raise BadInputError(f"expected DegradationParams, got {type(params).__name__}")
    if params.schema_version != SCHEMA_VERSION:
        raise BadInputError(
            f"degradation params have schema_version {params.schema_version}; expected {SCHEMA_VERSION}"
        )
    if not params.replayable:
        raise BadInputError(
            f"degradation params of pipeline {params.pipeline!r} describe no operator "
            "(stage1, stage2 and final are required unless identity is set)"
        )


# ---- applying ----------------------------------------------------------------------------------


def _as_batch(imgs: Any, device: torch.device | str | None) -> tuple[list[torch.Tensor], str]:
    """Images as a list of (1, 3, H, W) float tensors in [0, 1], and the input kind."""
    if isinstance(imgs, np.ndarray):
        kind, arrays = "array", [imgs]
    elif isinstance(imgs, torch.Tensor):
        if imgs.ndim != 4:
            raise BadInputError(f"expected a (B, 3, H, W) tensor, got shape {tuple(imgs.shape)}")
        kind = "tensor"
        arrays = list(imgs.unbind(0))
    elif isinstance(imgs, Sequence) and imgs and all(isinstance(a, np.ndarray) for a in imgs):
        kind, arrays = "list", list(imgs)
    else:
        raise BadInputError("images must be an RGB uint8 array, a list of them, or a (B, 3, H, W) tensor")
    out = []
    for a in arrays:
        if isinstance(a, np.ndarray):
            if a.ndim != 3 or a.shape[2] != 3:
                raise BadInputError(
                    f"expected an RGB image (H, W, 3), got shape {a.shape}; decode with "
                    "inscene.imageio.decode_image, which converts gray/RGBA/CMYK to RGB"
                )
            a = np.ascontiguousarray(a) if a.flags.writeable else np.array(a)
            t = torch.from_numpy(a).permute(2, 0, 1)
        else:
            if a.shape[0] != 3:
                raise BadInputError(f"expected 3 channels (RGB), got {a.shape[0]}")
            t = a
        if t.dtype == torch.uint8:
            t = t.to(dtype=torch.float32).div_(255.0)
        elif t.is_floating_point():
            t = t.to(torch.float32)
            if not bool(torch.isfinite(t).all()):
                raise BadInputError("image has NaN or infinite values")
            if float(t.min()) < 0 or float(t.max()) > 1:
                raise BadInputError("float images must be in [0, 1]")
        else:
            raise BadInputError(f"images must be uint8 or float in [0, 1], got {t.dtype}")
        if device is not None:
            t = t.to(device)
        out.append(t.contiguous()[None])
    return out, kind


def _blur(x: torch.Tensor, stage: DegradationStage) -> torch.Tensor:
    if stage.psf_field is not None:
        return apply_psf_field(x[0], stage.psf_field)[None]
    if stage.blur is not None and stage.blur.kind != "delta":
        return filter2d(x, [kernel_array(stage.blur, PAD_TO)])
    return x


def _noise(x: torch.Tensor, stage: DegradationStage) -> torch.Tensor:
    for spec in stage.noise:
        x = add_noise(x[0], spec)[None]
    return x


def _jpeg_all(xs: list[torch.Tensor], qualities: list[int | None]) -> list[torch.Tensor]:
    """Clamp, then JPEG each image whose quality is set (Pillow, in parallel threads)."""
    xs = [x.clamp(0, 1) for x in xs]
    todo = [i for i, q in enumerate(qualities) if q is not None]
    if not todo:
        return xs
    if len(todo) == 1:
        i = todo[0]
        xs[i] = jpeg_mod.jpeg(xs[i], [int(qualities[i])])
        return xs
    outs = jpeg_mod._pool().map(lambda i: jpeg_mod.jpeg(xs[i], [int(qualities[i])]), todo)
    for i, y in zip(todo, outs, strict=True):
        xs[i] = y
    return xs


def _resize_sinc(x: torch.Tensor, final: FinalStep, size: tuple[int, int]) -> torch.Tensor:
    x = resize(x, size, final.resize_mode)
    if final.sinc is not None:
        x = filter2d(x, [kernel_array(final.sinc, PAD_TO)])
    return x


def _min_size(p: DegradationParams, h: int, w: int) -> None:
    if h < p.scale or w < p.scale:
        raise BadInputError(
            f"image is {w}x{h} px; the x{p.scale} degradation needs at least {p.scale} px per side "
            f"(its LQ is 1/{p.scale} of the input)"
        )


def apply(imgs: Any, params: DegradationParams | Sequence[DegradationParams], *, device: str | None = None) -> Any:
    """Degrade images with the operator(s) ``params`` describe; deterministic.

    Args:
        imgs: an RGB uint8 array (H, W, 3), a list of them, or a (B, 3, H, W) tensor (uint8, or
            float in [0, 1]) on CPU or CUDA.
        params: one record for every image (the same G), or one per image.
        device: where array inputs are processed (default CPU); tensors stay on their device.

    Returns:
        Same kind as ``imgs``: uint8 array(s), or a float tensor on the 8-bit grid. The size is
        the input's (``output="gt"``) or ``(H // scale, W // scale)`` (``output="lq"``).

    Raises:
        BadInputError: not RGB, a side shorter than ``scale`` px, values outside [0, 1] or
            non-finite, or params that are not a complete operator of this schema version.
    """
    xs, kind = _as_batch(imgs, device)
    plist = [params] * len(xs) if isinstance(params, DegradationParams) else list(params)
    if len(plist) != len(xs):
        raise BadInputError(f"{len(plist)} params for {len(xs)} images")
    for p in plist:
        check_params(p)
    sizes = [tuple(x.shape[-2:]) for x in xs]
    for p, (h, w) in zip(plist, sizes, strict=True):
        _min_size(p, h, w)
    outs = _degrade(xs, plist, sizes)
    if kind == "tensor":
        if len({tuple(o.shape) for o in outs}) != 1:
            raise BadInputError("params with different scale/output in one tensor batch give different sizes")
        return torch.cat(outs)
    arrays = [(o[0] * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy() for o in outs]
    return arrays[0] if kind == "array" else arrays


def _degrade(
    xs: list[torch.Tensor], plist: list[DegradationParams], sizes: list[tuple[int, int]]
) -> list[torch.Tensor]:
    """Run each image's operator: torch steps one image at a time, the JPEG steps over the batch."""
    n = len(xs)
    live = [i for i in range(n) if not plist[i].identity]
    lq_size = [(h // p.scale, w // p.scale) for p, (h, w) in zip(plist, sizes, strict=True)]
    out: list[torch.Tensor] = list(xs)
    for i in live:
        p = plist[i]
        x = usm_sharpen(xs[i]) if p.usm else xs[i]
        x = _blur(x, p.stage1)
        x = resize(x, scaled_size(*x.shape[-2:], p.stage1.resize.factor), p.stage1.resize.mode)
        out[i] = _noise(x, p.stage1)
    q1 = [plist[i].stage1.jpeg_quality if i in live else None for i in range(n)]
    out = _jpeg_all(out, q1) if live else out
    for i in live:
        p, (h, w) = plist[i], sizes[i]
        x = _blur(out[i], p.stage2)
        f2 = p.stage2.resize.factor
        target = (max(1, int(h / p.scale * f2)), max(1, int(w / p.scale * f2)))  # BasicSR's int()
        x = resize(x, target, p.stage2.resize.mode)
        x = _noise(x, p.stage2)
        if p.final.order == "resize_sinc_jpeg":
            x = _resize_sinc(x, p.final, lq_size[i])
        out[i] = x
    q2 = [plist[i].final.jpeg_quality if i in live else None for i in range(n)]
    out = _jpeg_all(out, q2) if live else out
    for i in range(n):
        p = plist[i]
        x = out[i]
        if i in live and p.final.order == "jpeg_resize_sinc":
            x = _resize_sinc(x, p.final, lq_size[i])
        if i not in live:
            x = x if p.output == "gt" else resize(x, lq_size[i], "bicubic")
        x = quantize(x)  # Real-ESRGAN's final clamp + round to 8 bits
        if p.output == "gt" and tuple(x.shape[-2:]) != sizes[i]:
            x = quantize(resize(x, sizes[i], "bicubic"))
        out[i] = x
    return out
