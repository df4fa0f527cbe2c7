"""Stage I: align -> Ref-FR -> exact inverse warp (§3.1), on real photos (scikit-image's astronaut)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from inscene.errors import BadInputError
from inscene.schema import Face
from restorer.stage1 import Stage1, pair_box

# dlib's landmarks on the astronaut (measured once; the detector test below re-checks them)
ASTRO_LANDMARKS = np.array([[203.333, 101.5], [246.833, 103.667], [225.0, 127.0], [201.0, 139.0], [246.0, 141.0]])
ASTRO_FACE_PX = 93.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _shift(a: np.ndarray, b: np.ndarray) -> float:
    """Global translation between two images (px), least squares on the gradients (Lucas-Kanade)."""
    g1 = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    g2 = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    gy, gx = np.gradient((g1 + g2) / 2)
    dt = g2 - g1
    m = np.array([[np.sum(gx * gx), np.sum(gx * gy)], [np.sum(gx * gy), np.sum(gy * gy)]])
    d = np.linalg.solve(m, -np.array([np.sum(gx * dt), np.sum(gy * dt)]))
    return float(np.hypot(*d))


def scene_with_face(face_px: float, angle: float) -> tuple[np.ndarray, Face]:
    """The astronaut scaled so its face is ``face_px`` wide and rotated by ``angle`` degrees."""
    astro = data.astronaut()
    k = face_px / ASTRO_FACE_PX
    c = ASTRO_LANDMARKS.mean(0)
    m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, k)
    side = int(3 * face_px) + 40
    m[:, 2] += np.array([side / 2, side / 2]) - c
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC
    img = cv2.warpAffine(astro, m, (side, side), flags=interp, borderMode=cv2.BORDER_REFLECT_101)
    lm = ASTRO_LANDMARKS @ m[:, :2].T + m[:, 2]
    box = np.r_[lm.min(0) - 0.3 * face_px, lm.max(0) + 0.3 * face_px]
    return img, Face(box=box.tolist(), landmarks=lm.tolist(), score=1.0, backend="test")


@pytest.mark.parametrize("face_px", [40, 100, 300, 900])
@pytest.mark.parametrize("angle", [-45, 0, 30, 45])
def test_gt_round_trip_is_exact_up_to_interpolation(face_px, angle):
    img, face = scene_with_face(face_px, angle)
    res = Stage1("gt", detector=None).run(img, ground_truth=img, face=face)
    assert res.ok, res.reason
    assert res.x_hq.shape == res.x_lq.shape
    x0, y0, x1, y1 = res.box
    # the pair covers the face: its box is ~4 eye distances, i.e. larger than the face
    assert x1 - x0 > face_px and y1 - y0 > face_px
    # inside the face (a disc around the landmarks)
    lm = np.array(face.landmarks) - (x0, y0)
    r = np.linalg.norm(lm[0] - lm[1]) * 1.2
    yy, xx = np.mgrid[: y1 - y0, : x1 - x0]
    inside = (xx - lm[:, 0].mean()) ** 2 + (yy - lm[:, 1].mean()) ** 2 < r**2
    err = (res.x_hq.astype(np.float64) - res.x_lq.astype(np.float64)) ** 2
    psnr_face = 10 * np.log10(255.0**2 / err[inside].mean())
    assert psnr_face > 35, psnr_face
    assert _shift(res.x_hq, res.x_lq) < 1.0
    # the exact inverse: aligned-frame points map back onto the landmarks
    back = res.alignment.to_source(res.alignment.to_aligned(np.array(face.landmarks)))
    assert np.sqrt(np.mean(np.sum((back - np.array(face.landmarks)) ** 2, axis=1))) < 1e-6


def test_detected_face_on_a_real_photo():
    astro = data.astronaut()
    res = Stage1("gt").run(astro, ground_truth=astro)
    assert res.ok and res.face_source == "detected"
    assert np.abs(np.array(res.face.landmarks) - ASTRO_LANDMARKS).max() < 3
    assert res.aligned_lq.shape == (512, 512, 3) and res.aligned_hq.shape == (512, 512, 3)
    assert res.pair.shape == (*res.x_lq.shape[:2], 6)
    assert _psnr(res.x_hq, res.x_lq) > 40
    assert res.summary()["ok"] is True and len(res.summary()["matrix"]) == 2


def test_passthrough_gives_hq_equal_lq():
    img, face = scene_with_face(120, 20)
    res = Stage1("passthrough", detector=None).run(img, face=face)
    assert res.ok and _psnr(res.x_hq, res.x_lq) > 38


def test_no_face_and_small_face_are_reported_not_raised():
    stage = Stage1("gt")
    flat = np.full((200, 200, 3), 128, np.uint8)
    res = stage.run(flat, ground_truth=flat)
    assert not res.ok and res.reason == "no face"
    with pytest.raises(BadInputError, match="no face pair"):
        _ = res.pair
    img, face = scene_with_face(12, 0)
    res = Stage1("gt", detector=None).run(img, ground_truth=img, face=face)
    assert not res.ok and res.reason.startswith("face too small")


def test_face_at_the_border_gives_a_clipped_pair():
    img, face = scene_with_face(100, 0)
    cut = np.ascontiguousarray(img[:, 120:])  # the face's left part is off the image
    lm = np.array(face.landmarks) - (120, 0)
    f = Face(box=[0.0, face.box[1], face.box[2] - 120, face.box[3]], landmarks=lm.tolist(), score=1, backend="t")
    res = Stage1("gt", detector=None).run(cut, ground_truth=cut, face=f)
    assert res.ok and res.box[0] == 0 and res.x_hq.shape == res.x_lq.shape
    assert _psnr(res.x_hq, res.x_lq) > 35


def test_pair_box_is_inside_the_aligned_footprint():
    from inscene.faces.align import estimate_alignment

    for angle in (0, 30, 45, -60):
        _, face = scene_with_face(100, angle)
        al = estimate_alignment(face, 512)
        x0, y0, x1, y1 = pair_box(al, (10_000, 10_000))
        corners = np.array([[x0, y0], [x1 - 1, y0], [x0, y1 - 1], [x1 - 1, y1 - 1]], np.float64)
        inside = al.to_aligned(corners)
        assert (inside >= -0.5).all() and (inside <= 511.5).all()
        assert abs((x1 - x0) - (y1 - y0)) <= 1  # square


def test_bad_inputs():
    stage = Stage1("gt", detector=None)
    img, face = scene_with_face(100, 0)
    with pytest.raises(BadInputError, match="ground-truth image"):
        stage.run(img, face=face)  # the gt backend without a GT image
    with pytest.raises(BadInputError, match="uint8"):
        stage.run(img.astype(np.float32), face=face, ground_truth=img)
    with pytest.raises(BadInputError, match="differ in size"):
        stage.run(img, face=face, ground_truth=img[:-1])
    with pytest.raises(BadInputError, match="no detector"):
        stage.run(img, ground_truth=img)
    with pytest.raises(BadInputError, match="unknown Ref-FR"):
        Stage1("codeformer")


def test_references_are_aligned_to_the_canonical_frame():
    stage = Stage1("gt")
    refs = stage.align_references([data.astronaut(), np.full((64, 64, 3), 9, np.uint8)])
    assert len(refs) == 1 and refs[0].shape == (512, 512, 3)
