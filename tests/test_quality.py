"""IQA scorers (inscene.quality): registry metadata, the embedded scorers against scikit-image and
pyiqa, learned metrics through pyiqa's real construction path (random init, CPU), and missing or
present weight files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inscene.errors import BadInputError, MissingWeightsError
from inscene.quality import (
    PSNR_IDENTICAL_DB,
    LaplacianVarianceScorer,
    as_batch,
    create_scorer,
    get_scorer_info,
    list_scorers,
)

PYIQA_BACKED = [n for n in list_scorers() if get_scorer_info(n).backend.startswith("pyiqa:")]


@pytest.fixture()
def no_weights(tmp_path, monkeypatch):
    """Every weight search place points into an empty folder."""
    for var in ("INSCENE_HOME", "TORCH_HOME", "HF_HOME", "INSIGHTFACE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def _pairs(n=2, h=48, w=64, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    gt = rng.random((n, 3, h, w)).astype(np.float32)
    # smooth it a little so SSIM is not trivially ~0
    gt = (gt + np.roll(gt, 1, axis=2) + np.roll(gt, 1, axis=3)) / 3
    pred = np.clip(gt + noise * rng.standard_normal(gt.shape).astype(np.float32), 0, 1)
    return pred, gt


# ---- registry ---------------------------------------------------------------------------------


def test_registry_lists_paper_metrics_and_embedded_ones():
    names = set(list_scorers())
    assert {"psnr", "ssim", "lpips", "dists", "fid", "musiq", "clipiqa", "maniqa", "liqe", "topiq_nr"} <= names
    assert {"laplacian", "piqe", "psnr-rgb", "ssim-rgb"} <= names
    assert set(list_scorers(weight_free=True)) >= {"psnr", "ssim", "laplacian", "piqe"}
    assert "musiq" in list_scorers("NR") and "lpips" in list_scorers("FR")
    with pytest.raises(BadInputError, match="unknown scorer 'nope'"):
        create_scorer("nope")


@pytest.mark.parametrize("name", PYIQA_BACKED)
def test_metadata_agrees_with_pyiqa(name):
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    info = get_scorer_info(name)
    cfg = DEFAULT_CONFIGS[info.backend.split(":", 1)[1]]
    assert info.mode == cfg["metric_mode"] or (name == "fid")  # pyiqa files FID under NR
    assert info.lower_better == cfg.get("lower_better", False)
    # score range: pyiqa writes e.g. "~0, ~100" ('~' approximate, empty: open)
    lo, hi = (v.strip() for v in cfg["score_range"].split(","))
    assert info.score_range[0] == float(lo.lstrip("~"))
    high = float(hi.lstrip("~")) if hi.lstrip("~") else math.inf
    assert info.score_range[1] == high or (info.score_range[1] == math.inf and hi.startswith("~"))


def test_every_scorer_declares_what_it_is():
    for name in list_scorers():
        info = get_scorer_info(name)
        assert info.mode in ("FR", "NR")
        assert info.score_range[0] < info.score_range[1]
        assert info.backend and info.description
        assert all(isinstance(w, str) for w in info.weights)


# ---- embedded PSNR / SSIM -----------------------------------------------------------------------


def _y(x):  # BT.601 Y in [0, 1], float64
    return (65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2] + 16.0) / 255.0


def test_psnr_matches_pyiqa_and_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio

    pred, gt = _pairs()
    ours = create_scorer("psnr").score(pred, gt)
    ref = create_scorer("psnr-pyiqa", device="cpu").score(pred, gt)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    yp, yg = _y(pred.astype(np.float64)), _y(gt.astype(np.float64))
    sk = [peak_signal_noise_ratio(yg[i], yp[i], data_range=1.0) for i in range(len(pred))]
    np.testing.assert_allclose(ours, sk, atol=1e-4)
    rgb = create_scorer("psnr-rgb").score(pred, gt)
    sk_rgb = [peak_signal_noise_ratio(gt[i], pred[i], data_range=1.0) for i in range(len(pred))]
    np.testing.assert_allclose(rgb, sk_rgb, atol=1e-4)


def test_ssim_matches_pyiqa_and_scikit_image():
    from skimage.metrics import structural_similarity

    pred, gt = _pairs(h=40, w=56)
    ours = create_scorer("ssim").score(pred, gt)
    ref = create_scorer("ssim-pyiqa", device="cpu").score(pred, gt)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    yp = np.round(_y(pred.astype(np.float32)) * 255)
    yg = np.round(_y(gt.astype(np.float32)) * 255)
    sk = [
        structural_similarity(yg[i], yp[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              data_range=255)
        for i in range(len(pred))
    ]
    np.testing.assert_allclose(ours, sk, atol=2e-3)


def test_identical_images_give_inf_psnr_and_unit_ssim():
    _, gt = _pairs(n=1)
    assert create_scorer("psnr").score(gt, gt)[0] == math.inf
    assert create_scorer("ssim").score(gt, gt)[0] == pytest.approx(1.0, abs=1e-12)
    # pyiqa itself bounds it by its eps; aggregations use that bound for +inf
    assert create_scorer("psnr-pyiqa", device="cpu").score(gt, gt)[0] == pytest.approx(PSNR_IDENTICAL_DB)


def test_full_reference_needs_reference_of_same_shape():
    pred, gt = _pairs()
    with pytest.raises(BadInputError, match="full-reference"):
        create_scorer("psnr").score(pred)
    with pytest.raises(BadInputError, match="differ"):
        create_scorer("psnr").score(pred, gt[:, :, :20])
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        create_scorer("psnr").score(pred * 3, gt)


def test_as_batch_accepts_uint8_and_tensors():
    import torch

    u8 = np.full((5, 7, 3), 255, np.uint8)
    assert as_batch(u8).shape == (1, 3, 5, 7) and as_batch(u8).max() == 1.0
    assert as_batch([u8, u8]).shape == (2, 3, 5, 7)
    assert as_batch(torch.zeros(2, 3, 4, 4)).shape == (2, 3, 4, 4)


# ---- Laplacian variance -----------------------------------------------------------------------


def test_laplacian_variance_is_a_sharpness_measure_on_8bit_gray():
    import cv2
    from skimage import data

    img = data.astronaut()
    sc = create_scorer("laplacian")
    sharp = sc.score_array(img)
    blurred = sc.score_array(cv2.GaussianBlur(img, (0, 0), 2.0))
    assert sharp > 5 * blurred > 0
    # documented scale: OpenCV BT.601 gray, 0..255, 4-neighbour Laplacian
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert sharp == pytest.approx(cv2.Laplacian(gray, cv2.CV_64F, ksize=1).var())
    assert sc.score_array(np.full((32, 32, 3), 128, np.uint8)) == 0.0
    # a region is the same as the crop; boxes are pixels [x1, y1, x2, y2]
    box = [179.0, 87.0, 272.0, 179.0]
    assert sc.score_array(img, box) == pytest.approx(sc.score_array(img[87:179, 179:272]))
    batch = sc.score(as_batch([img, img]), boxes=[box, None])
    assert batch[0] == pytest.approx(sc.score_array(img, box)) and batch[1] == pytest.approx(sharp)


def test_laplacian_working_resolution():
    from skimage import data

    img = data.astronaut()
    small = LaplacianVarianceScorer(max_side=128)
    assert small.version != create_scorer("laplacian").version
    import cv2

    ref = cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (128, 128), interpolation=cv2.INTER_AREA)
    assert small.score_array(img) == pytest.approx(cv2.Laplacian(ref, cv2.CV_64F).var())
    with pytest.raises(BadInputError):
        LaplacianVarianceScorer(max_side=2)


# ---- learned metrics: real pyiqa construction, random weights -----------------------------------

LEARNED = [
    ("lpips", {}, 64),
    ("dists", {}, 64),
    ("musiq", {}, 64),
    ("clipiqa", {}, 64),
    ("topiq_nr", {}, 64),
    pytest.param("liqe", {}, 224, marks=pytest.mark.slow),  # LIQE refuses sides < 224
    pytest.param("maniqa", {"test_sample": 1}, 64, marks=pytest.mark.slow),  # ViT-B/8: ~10 s on 2 cores
]


@pytest.mark.parametrize(("name", "opts", "side"), LEARNED)
def test_learned_metric_random_init_through_pyiqa(name, opts, side, no_weights):
    sc = create_scorer(name, device="cpu", pretrained=False, **opts)
    assert "random-init" in sc.version
    pred, gt = _pairs(n=1, h=side, w=side)
    out = sc.score(pred, gt) if sc.mode == "FR" else sc.score(pred)
    assert out.shape == (1,) and np.isfinite(out).all()
    metric = sc._metric()  # the object pyiqa built: direction and mode are pyiqa's
    assert metric.lower_better == sc.lower_better
    assert metric.metric_mode == sc.mode
    assert not any(no_weights.rglob("*.pt*")), "nothing may be written to the weight caches"


def test_fid_features_and_distance_random_init(no_weights):
    sc = create_scorer("fid", pretrained=False, device="cpu")
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(3)]
    f = sc.features(imgs)  # any sizes: pyiqa resizes each to 299x299 (clean mode)
    assert f.shape == (3, 2048) and np.isfinite(f).all()
    with pytest.raises(BadInputError):
        sc.score(imgs)


def test_fid_distance_is_pyiqas_frechet_distance():
    from inscene.quality import FIDScorer

    # (pyiqa's own function, on 16-d features: a 2048-d matrix square root takes ~10 s on 2 cores)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 16))
    # same covariance, mean shifted by 1 in every dimension: FID = |mu1 - mu2|^2 = 16
    assert FIDScorer.distance(a, a + 1.0) == pytest.approx(16.0, rel=1e-6)
    b = rng.standard_normal((400, 16)) * 2.0  # covariance ~4I: FID ~ 16 * (1 + 4 - 2 * 2) = 16
    assert FIDScorer.distance(a, b) == pytest.approx(16.0, rel=0.25)
    with pytest.raises(BadInputError):
        FIDScorer.distance(a[:1], b)


# ---- weights -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "filename"),
    [("musiq", "musiq_koniq_ckpt-e95806b9.pth"), ("lpips", "LPIPS_v0.1_alex-df73285e.pth"),
     ("maniqa", "ckpt_koniq10k.pt"), ("fid", "pt_inception-2015-12-05-6726825d.pth"), ("clipiqa", "RN50.pt")],
)
def test_missing_weights_name_the_file_where_and_how(name, filename, no_weights):
    with pytest.raises(MissingWeightsError) as err:
        create_scorer(name)
    msg = str(err.value)
    assert filename in msg and "inscene weights fetch" in msg and str(no_weights) in msg
    assert "\n" not in msg


def test_weights_found_are_loaded_by_pyiqas_own_code(no_weights, monkeypatch):
    """A MUSIQ checkpoint (random, in the real file name and layout) under $INSCENE_HOME is used."""
    import torch
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(1)
    net = MUSIQ(pretrained=False, num_class=1)
    hub = no_weights / "inscene_home" / "torch" / "hub"
    (hub / "pyiqa").mkdir(parents=True)
    ckpt = hub / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth"
    torch.save(net.state_dict(), ckpt)

    sc = create_scorer("musiq", device="cpu")
    assert sc.checkpoint == "musiq_koniq_ckpt-e95806b9.pth" and "random-init" not in sc.version
    x, _ = _pairs(n=1, h=64, w=64)
    got = sc.score(x)
    net.eval()
    with torch.no_grad():
        want = net(torch.from_numpy(x)).reshape(-1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)

    # an explicit path is the only place looked in
    with pytest.raises(MissingWeightsError):
        create_scorer("musiq", weights_path=no_weights / "nowhere")
    loose = no_weights / "elsewhere" / ckpt.name  # an explicit file anywhere
    loose.parent.mkdir()
    loose.write_bytes(ckpt.read_bytes())
    ckpt.unlink()
    explicit = create_scorer("musiq", device="cpu", weights_path=loose)
    np.testing.assert_allclose(explicit.score(x), want, rtol=1e-5)
    with pytest.raises(MissingWeightsError):
        create_scorer("musiq")
