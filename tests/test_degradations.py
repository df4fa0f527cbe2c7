"""Degradations: kernels against closed forms, noise statistics, libjpeg replay, same-G, presets,
spatially varying blur, bad input (issue 6)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from inscene.degradations import PROFILES, apply, describe, load_params, preset, sample_params
from inscene.degradations.jpeg import jpeg, jpeg_roundtrip
from inscene.degradations.kernels import (
    gaussian_kernel,
    generalized_gaussian_kernel,
    kernel_array,
    plateau_kernel,
    sample_kernel,
    sinc_kernel,
)
from inscene.degradations.noise import add_noise, gaussian_field
from inscene.degradations.ops import filter2d
from inscene.degradations.spatial import apply_psf_field
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


def _photo(name: str, size: int = 128) -> np.ndarray:
    import skimage.data

    im = Image.fromarray(getattr(skimage.data, name)()).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(im).copy()


def _grid(n):
    ax = np.arange(n) - (n - 1) / 2
    return np.meshgrid(ax, ax)


# ---- kernels -------------------------------------------------------------------------------------

KERNELS = [
    BlurKernel(kind="iso", size=21, sigma_x=2.0, sigma_y=2.0),
    BlurKernel(kind="aniso", size=15, sigma_x=2.5, sigma_y=0.7, rotation=0.6),
    BlurKernel(kind="generalized_iso", size=11, sigma_x=1.5, sigma_y=1.5, beta=0.7),
    BlurKernel(kind="generalized_aniso", size=13, sigma_x=2.0, sigma_y=1.0, rotation=-1.0, beta=2.5),
    BlurKernel(kind="plateau_iso", size=9, sigma_x=1.2, sigma_y=1.2, beta=1.5),
    BlurKernel(kind="plateau_aniso", size=21, sigma_x=3.0, sigma_y=1.0, rotation=2.0, beta=1.2),
    BlurKernel(kind="sinc", size=17, cutoff=1.3),
    BlurKernel(kind="delta", size=7),
]


@pytest.mark.parametrize("spec", KERNELS, ids=lambda s: s.kind)
def test_every_kernel_sums_to_one_and_is_point_symmetric(spec):
    k = kernel_array(spec)
    assert k.shape == (spec.size, spec.size) and np.isfinite(k).all()
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)  # correlation == convolution
    if spec.kind in ("iso", "generalized_iso", "plateau_iso", "sinc", "delta"):
        np.testing.assert_allclose(k, k.T, atol=1e-15)
        np.testing.assert_allclose(k, k[::-1], atol=1e-15)
    padded = kernel_array(spec, 21)
    assert padded.shape == (21, 21) and padded.sum() == pytest.approx(1.0)


def test_kernels_match_their_closed_forms():
    xx, yy = _grid(15)
    r2 = xx**2 + yy**2
    iso = np.exp(-r2 / (2 * 1.7**2))
    np.testing.assert_allclose(gaussian_kernel(15, 1.7, 1.7), iso / iso.sum(), atol=1e-14)
    # anisotropic, unrotated: separable exp(-x²/2σx² - y²/2σy²), x along columns
    an = np.exp(-(xx**2) / (2 * 2.5**2) - yy**2 / (2 * 0.8**2))
    np.testing.assert_allclose(gaussian_kernel(15, 2.5, 0.8, 0.0), an / an.sum(), atol=1e-14)
    q = xx**2 / 2.0**2 + yy**2 / 1.0**2
    gg = np.exp(-0.5 * q**1.8)
    np.testing.assert_allclose(generalized_gaussian_kernel(15, 2.0, 1.0, 0.0, 1.8), gg / gg.sum(), atol=1e-14)
    pl = 1 / (1 + q**1.3)
    np.testing.assert_allclose(plateau_kernel(15, 2.0, 1.0, 0.0, 1.3), pl / pl.sum(), atol=1e-14)
    # β = 1 generalized Gaussian is the Gaussian
    np.testing.assert_allclose(
        generalized_gaussian_kernel(15, 2.0, 1.0, 0.4, 1.0), gaussian_kernel(15, 2.0, 1.0, 0.4), atol=1e-14
    )


@pytest.mark.parametrize("theta", [0.0, 0.5, 1.2, -0.9, 2.8])
def test_anisotropic_kernels_rotate_with_the_angle(theta):
    k = gaussian_kernel(31, 4.0, 1.0, theta)
    xx, yy = _grid(31)
    cov = np.cov(np.stack([xx.ravel(), yy.ravel()]), aweights=k.ravel())
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, np.argmax(evals)]
    angle = math.atan2(major[1], major[0])
    diff = (angle - theta) % math.pi
    assert min(diff, math.pi - diff) < 0.02
    # a quarter turn swaps the axes
    np.testing.assert_allclose(gaussian_kernel(21, 3.0, 1.0, math.pi / 2), gaussian_kernel(21, 3.0, 1.0, 0.0).T,
                               atol=1e-12)


def test_sinc_kernel_cutoff_matches_its_parameter():
    cutoff = math.pi / 2
    k = sinc_kernel(41, cutoff)
    resp = np.abs(np.fft.fftshift(np.fft.fft2(k, s=(256, 256))))
    f = np.fft.fftshift(np.fft.fftfreq(256)) * 2 * math.pi
    fx, fy = np.meshgrid(f, f)
    r = np.hypot(fx, fy)
    assert resp[r < 0.85 * cutoff].min() > 0.85  # passes below ω_c
    assert resp[(r > 1.25 * cutoff) & (r < math.pi)].max() < 0.12  # stops above ω_c
    # the closed form ω_c J₁(ω_c r) / (2π r), with ω_c² / 4π at r = 0, normalised
    from scipy import special

    xx, yy = _grid(41)
    r = np.hypot(xx, yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = cutoff * special.j1(cutoff * r) / (2 * math.pi * r)
    want[r == 0] = cutoff**2 / (4 * math.pi)
    np.testing.assert_allclose(k, want / want.sum(), atol=1e-15)


def test_kernel_draws_follow_the_profile():
    rng = np.random.default_rng(0)
    ks = PROFILES["realesrgan"].stage1.kernel
    draws = [sample_kernel(rng, ks) for _ in range(600)]
    assert {d.size for d in draws} == set(range(7, 22, 2))
    sinc = [d for d in draws if d.kind == "sinc"]
    assert 0.05 < len(sinc) / len(draws) < 0.16
    assert all(math.pi / 5 <= d.cutoff <= math.pi for d in sinc)
    assert all(d.cutoff >= math.pi / 3 for d in sinc if d.size < 13)
    iso = [d for d in draws if d.kind == "iso"]
    assert 0.33 < len(iso) / len(draws) < 0.48  # 0.45 x 0.9
    assert all(d.rotation == 0 and d.sigma_x == d.sigma_y for d in iso)
    assert all(0.2 <= d.sigma_x <= 3.0 for d in draws if d.sigma_x)
    betas = [d.beta for d in draws if d.kind.startswith("generalized")]
    assert min(betas) >= 0.5 and max(betas) <= 4 and any(b < 1 for b in betas) and any(b > 1 for b in betas)


@pytest.mark.parametrize("shape", [(3, 40, 52), (3, 9, 6), (3, 1, 30)])
def test_filter2d_is_reflect101_correlation_for_any_size(shape):
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random(shape, dtype=np.float32))[None]
    for spec in KERNELS[:7]:
        k = kernel_array(spec, 21)
        got = filter2d(x, [k])[0].numpy()
        want = np.stack([ndimage.correlate(x[0, c].numpy().astype(np.float64), k, mode="mirror")
                         for c in range(3)])
        np.testing.assert_allclose(got, want, atol=2e-6)


# ---- noise ----------------------------------------------------------------------------------------


def test_gaussian_noise_std_matches_sigma_and_gray_is_shared():
    x = torch.full((3, 256, 256), 0.5)
    for sigma in (2.0, 10.0, 25.0):
        n = (add_noise(x.clone(), NoiseSpec(kind="gaussian", sigma=sigma, seed=3)) - x) * 255
        assert float(n.std()) == pytest.approx(sigma, rel=0.02)
        assert abs(float(n.mean())) < 0.1
        assert not torch.equal(n[0], n[1])
    g = add_noise(x.clone(), NoiseSpec(kind="gaussian", sigma=10.0, gray=True, seed=3))
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])


def test_poisson_noise_variance_scales_with_intensity():
    # 256 levels present -> vals = 256; var(noise) = scale² · I / vals
    ramp = torch.arange(256, dtype=torch.float32).repeat_interleave(256) / 255.0
    x = ramp.reshape(1, 256, 256).expand(3, 256, 256).contiguous()
    scale = 2.0
    n = add_noise(x.clone(), NoiseSpec(kind="poisson", scale=scale, seed=5)) - x
    variances = {}
    levels = (x.reshape(3, -1) * 255).round()
    flat = n.reshape(3, -1)
    for level in (40, 100, 180):
        variances[level] = float(flat[levels == level].var())
        assert variances[level] == pytest.approx(scale**2 * (level / 255) / 256, rel=0.12)
    assert variances[180] / variances[40] == pytest.approx(180 / 40, rel=0.15)


def test_zero_variance_poisson_input_is_finite_and_black_stays_black():
    black = torch.zeros(3, 32, 32)
    assert torch.equal(add_noise(black.clone(), NoiseSpec(kind="poisson", scale=3.0, seed=1)), black)
    flat = torch.full((3, 32, 32), 0.5)
    for gray in (False, True):
        out = add_noise(flat.clone(), NoiseSpec(kind="poisson", scale=3.0, gray=gray, seed=1))
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


# ---- JPEG replay ---------------------------------------------------------------------------------


def _pil_jpeg(arr, q):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.mark.parametrize("quality", [30, 75, 95, 100])
def test_jpeg_step_reproduces_pil_exactly(quality):
    img = _photo("astronaut", 96)
    np.testing.assert_array_equal(jpeg_roundtrip(img, quality), _pil_jpeg(img, quality))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    got = (jpeg(x, [quality])[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(got, _pil_jpeg(img, quality))


def _jpeg_only(q1, q2):
    keep = ResizeSpec(factor=1.0, mode="bicubic")
    return DegradationParams(
        pipeline="test", scale=1, stage1=DegradationStage(resize=keep, jpeg_quality=q1),
        stage2=DegradationStage(resize=keep),
        final=FinalStep(order="resize_sinc_jpeg", resize_mode="bicubic", jpeg_quality=q2),
    )


def test_pipeline_jpeg_steps_are_libjpeg_end_to_end():
    img = _photo("coffee", 80)
    out = apply(img, _jpeg_only(40, 100))
    np.testing.assert_array_equal(out, _pil_jpeg(_pil_jpeg(img, 40), 100))


# ---- replayable parameters: same params = same G --------------------------------------------------


def _linear_params(seed=11):
    """Blur, resize, Gaussian noise in both stages, final sinc, no JPEG: G is affine per seed."""
    return DegradationParams(
        pipeline="test", scale=2,
        stage1=DegradationStage(
            blur=BlurKernel(kind="aniso", size=11, sigma_x=1.5, sigma_y=0.6, rotation=0.3),
            resize=ResizeSpec(factor=0.7, mode="bilinear"),
            noise=[NoiseSpec(kind="gaussian", sigma=6.0, seed=seed)],
        ),
        stage2=DegradationStage(
            blur=BlurKernel(kind="iso", size=7, sigma_x=1.0, sigma_y=1.0),
            resize=ResizeSpec(factor=0.9, mode="area"),
            noise=[NoiseSpec(kind="gaussian", sigma=4.0, gray=True, seed=seed + 1)],
        ),
        final=FinalStep(order="jpeg_resize_sinc", resize_mode="bicubic",
                        sinc=BlurKernel(kind="sinc", size=9, cutoff=2.5)),
    )


def test_same_params_apply_the_same_kernels_and_noise_fields():
    rng = np.random.default_rng(0)
    a = (rng.random((64, 64, 3)) * 80 + 90).astype(np.uint8)  # mid-range: nothing clips
    b = a + 30
    p = _linear_params()
    ga, gb = apply([a, b], p)
    diff = gb.astype(int) - ga.astype(int)
    # G(a + c) = G(a) + c when the kernels and noise fields are shared (up to 8-bit rounding)
    assert np.abs(diff - 30).max() <= 2 and abs(diff.mean() - 30) < 0.2
    other = apply(b, _linear_params(seed=99))
    assert (other.astype(int) - ga.astype(int)).std() > 2  # another noise seed is another G
    assert torch.equal(
        gaussian_field(NoiseSpec(kind="gaussian", sigma=5, seed=4), (3, 16, 16), torch.device("cpu")),
        gaussian_field(NoiseSpec(kind="gaussian", sigma=5, seed=4), (3, 16, 16), torch.device("cpu")),
    )


def test_sample_params_is_seeded_and_replays_from_json():
    p1, p2 = sample_params(1), sample_params(2)
    assert p1 != p2 and p1 == sample_params(1) and p1.seed == 1
    assert len({sample_params(s).model_dump_json() for s in range(20)}) == 20
    img = _photo("chelsea", 64)
    out = apply(img, p1)
    back = load_params(p1.model_dump_json())
    assert back == p1
    np.testing.assert_array_equal(apply(img, back), out)
    # a batch with per-sample params gives the per-image results
    batch = apply([img, img[::-1].copy()], [p1, p2])
    np.testing.assert_array_equal(batch[0], out)
    np.testing.assert_array_equal(batch[1], apply(img[::-1].copy(), p2))


def test_profiles_draw_inside_their_ranges():
    for name, prof in PROFILES.items():
        for s in range(60):
            p = sample_params(s, name)
            if p.identity:
                continue
            assert prof.stage1.jpeg_range[0] <= p.stage1.jpeg_quality <= prof.stage1.jpeg_range[1]
            assert prof.stage2.jpeg_range[0] <= p.final.jpeg_quality <= prof.stage2.jpeg_range[1]
            for st, cfg in ((p.stage1, prof.stage1), (p.stage2, prof.stage2)):
                lo, hi = cfg.resize_range
                assert lo <= st.resize.factor <= hi
                for n in st.noise:
                    if n.kind == "gaussian":
                        assert cfg.noise_range[0] <= n.sigma <= cfg.noise_range[1]
                    else:
                        assert cfg.poisson_scale_range[0] <= n.scale <= cfg.poisson_scale_range[1]
                if st.blur is not None and st.blur.sigma_x is not None:
                    assert cfg.kernel.blur_sigma[0] <= st.blur.sigma_x <= cfg.kernel.blur_sigma[1]
    assert PROFILES["s3diff"].stage2.jpeg_range == (60, 100)
    assert PROFILES["realesrgan"].stage2.blur_prob == 0.8 and PROFILES["s3diff"].stage2.blur_prob == 0.5


def test_output_size_gt_or_lq():
    img = _photo("astronaut", 96)
    assert apply(img, sample_params(3)).shape == (96, 96, 3)
    assert apply(img, sample_params(3, output="lq")).shape == (24, 24, 3)


# ---- presets and spatially varying blur -----------------------------------------------------------


def test_presets_are_fixed_and_d3_is_the_mildest():
    assert preset("d2") == preset("d2")
    assert "d1" in describe(preset("d1"))
    for name in ("astronaut", "coffee", "chelsea"):
        img = _photo(name, 128)
        psnr = {}
        for d in ("d1", "d2", "d3", "d4"):
            out = apply(img, preset(d))
            assert out.shape == img.shape
            np.testing.assert_array_equal(out, apply(img, preset(d)))
            mse = np.mean((out.astype(float) - img) ** 2)
            psnr[d] = 10 * np.log10(255**2 / mse)
        assert psnr["d3"] > max(psnr["d1"], psnr["d2"], psnr["d4"]) + 5, psnr


def test_psf_field_blurs_corners_more_than_the_centre():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.random((3, 160, 160), dtype=np.float32))
    field = PSFField(sigma_center=0.4, sigma_corner=3.0, anisotropy=1.5)
    y = apply_psf_field(x, field)
    lap = torch.from_numpy(ndimage.laplace(y[0].numpy()))
    centre = float(lap[70:90, 70:90].abs().mean())
    corners = [float(lap[s].abs().mean()) for s in
               ((slice(2, 22), slice(2, 22)), (slice(138, 158), slice(2, 22)), (slice(2, 22), slice(138, 158)))]
    assert max(corners) < 0.4 * centre
    flat = torch.full((3, 40, 50), 0.3)
    torch.testing.assert_close(apply_psf_field(flat, field), flat)  # weights sum to 1
    uniform = PSFField(sigma_center=1.5, sigma_corner=1.5, anisotropy=1.0, size=11, grid=5)
    torch.testing.assert_close(apply_psf_field(x, uniform),
                               filter2d(x[None], [gaussian_kernel(11, 1.5, 1.5)])[0], atol=1e-5, rtol=0)


def test_spatial_blur_replaces_the_first_blur():
    p = sample_params(4, spatial_blur=True)
    assert p.stage1.psf_field is not None and p.stage1.blur is None and "spatial" in p.pipeline
    assert apply(_photo("coffee", 64), p).shape == (64, 64, 3)
    assert preset("d1", spatial_blur=True).stage1.psf_field is not None


# ---- bad input ------------------------------------------------------------------------------------


def test_bad_images_are_clear_errors():
    p = sample_params(0)
    with pytest.raises(BadInputError, match="at least 4 px"):
        apply(np.zeros((1, 64, 3), np.uint8), p)  # 1-pixel-tall image under x4
    with pytest.raises(BadInputError, match="RGB"):
        apply(np.zeros((32, 32), np.uint8), p)
    with pytest.raises(BadInputError, match="RGB"):
        apply(np.zeros((32, 32, 4), np.uint8), p)
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        apply(torch.full((1, 3, 16, 16), 1.5), p)
    with pytest.raises(BadInputError, match="NaN"):
        apply(torch.full((1, 3, 16, 16), float("nan")), p)


def test_small_and_one_pixel_wide_images_are_padded_not_nan():
    # smaller than the 21-px kernels: reflect-101 padding repeats (documented), output finite
    for h, w in ((16, 16), (5, 9), (4, 4)):
        for s in range(5):
            out = apply(torch.rand(1, 3, h, w), sample_params(s))
            assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()
    out = apply(torch.rand(1, 3, 1, 40), preset("d1"))  # scale-1 preset on a 1-px-tall image
    assert out.shape == (1, 3, 1, 40) and torch.isfinite(out).all()


def test_never_nan_over_many_draws():
    rng = np.random.default_rng(7)
    for s in range(25):
        h, w = (int(v) for v in rng.integers(8, 48, 2))
        prof = "s3diff" if s % 2 else "realesrgan"
        out = apply(torch.rand(1, 3, h, w), sample_params(s, prof, spatial_blur=s % 5 == 0))
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_bad_params_are_clear_errors():
    good = json.loads(sample_params(0).model_dump_json())
    with pytest.raises(BadInputError, match="schema_version"):
        load_params({**good, "schema_version": 0})
    bad = json.loads(json.dumps(good))
    bad["stage1"]["jpeg_quality"] = 101
    with pytest.raises(BadInputError, match="jpeg_quality"):
        load_params(bad)
    bad = json.loads(json.dumps(good))
    bad["stage1"]["noise"][0]["seed"] = -1
    with pytest.raises(BadInputError, match="seed"):
        load_params(bad)
    bad = json.loads(json.dumps(good))
    bad["stage2"]["resize"]["factor"] = 0
    with pytest.raises(BadInputError, match="factor"):
        load_params(bad)
    with pytest.raises(BadInputError, match="no operator"):
        load_params(DegradationParams(pipeline="realesrgan", seed=3, params={"jpeg": [70, 80]}).model_dump_json())
    with pytest.raises(BadInputError, match="not JSON"):
        load_params("{nope")
    with pytest.raises(BadInputError, match="unknown preset"):
        preset("d9")


def test_jpeg_quality_100_in_the_pipeline_is_finite():
    out = apply(torch.rand(1, 3, 32, 32), _jpeg_only(100, 100))
    assert torch.isfinite(out).all()


def test_unsharp_mask_option_sharpens_within_range():
    from inscene.degradations.ops import usm_sharpen

    img = torch.from_numpy(_photo("astronaut", 96)).permute(2, 0, 1)[None].float() / 255
    sharp = usm_sharpen(img)
    assert sharp.min() >= 0 and sharp.max() <= 1
    lap = lambda t: float(np.abs(ndimage.laplace(t[0, 1].numpy())).mean())  # noqa: E731
    assert lap(sharp) > 1.1 * lap(img)
    p = sample_params(5).model_copy(update={"usm": True})
    assert apply(_photo("coffee", 64), p).shape == (64, 64, 3)


def test_the_cuda_filter_path_agrees_with_the_cpu_path():
    # the grouped-conv path CUDA uses, run on CPU tensors (no GPU needed to check its logic)
    from inscene.degradations.ops import filter_conv, filter_valid_conv, filter_valid_cpu, pad_reflect

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((2, 3, 30, 17), dtype=np.float32))
    ks = [kernel_array(KERNELS[1], 21), kernel_array(KERNELS[6])]
    torch.testing.assert_close(filter_conv(x, ks), filter2d(x, ks), atol=2e-6, rtol=0)
    xp = pad_reflect(x[0], 10)
    torch.testing.assert_close(filter_valid_conv(xp, ks[0]), filter_valid_cpu(xp, ks[0]), atol=2e-6, rtol=0)
