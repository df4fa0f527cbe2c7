"""Canonical alignment (§3.1): template, exact inverse, paste-back, GT-face insertion (Table 3)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inscene.errors import BadInputError
from inscene.faces.align import (
    FFHQ_TEMPLATE_512,
    Alignment,
    align_face,
    canonical_template,
    estimate_alignment,
    face_blend_mask,
    insert_gt_face,
    invert_transform,
    paste_back,
    paste_mask,
    similarity_transform,
    warp_to_source,
)

EYE_DIST_512 = float(np.linalg.norm(FFHQ_TEMPLATE_512[1] - FFHQ_TEMPLATE_512[0]))


def _rotation(deg: float) -> np.ndarray:
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _scene_with_markers(face_px: float, angle: float):
    """A scene whose face (2 x eye distance = ``face_px``) is rotated by ``angle``, with a
    marker channel of Gaussian dots on a 5x5 grid over the face: (image, landmarks, dots, sigma)."""
    side = int(max(160, face_px * 2.6))
    centre = np.array([side / 2, side / 2])
    s = face_px / (2 * EYE_DIST_512)
    rot = _rotation(angle)
    landmarks = (FFHQ_TEMPLATE_512 - FFHQ_TEMPLATE_512.mean(0)) * s @ rot.T + centre
    grid = np.linspace(-0.8, 0.8, 5)
    dots = np.array([[x, y] for x in grid for y in grid]) * face_px * 0.6 @ rot.T + centre
    sigma = max(1.5, face_px / 40)
    img = np.zeros((side, side), np.float32)
    r = int(np.ceil(5 * sigma))
    for x, y in dots:
        x0, y0 = int(x) - r, int(y) - r
        ys, xs = np.mgrid[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1].astype(np.float32)
        img[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1] += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma * sigma))
    return img, landmarks, dots, sigma


def _centroid(img: np.ndarray, p: np.ndarray, r: int) -> np.ndarray:
    x0, y0 = int(round(p[0])) - r, int(round(p[1])) - r
    win = img[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1].astype(np.float64)
    ys, xs = np.mgrid[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1]
    return np.array([(win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()])


@pytest.mark.parametrize(
    "face_px, angle",
    [(100, 0), (40, 0), (900, 0), (100, 45), (100, -45), (40, 30), (900, -45)],
    ids=["1x", "40px", "900px", "rot+45", "rot-45", "40px-rot30", "900px-rot-45"],
)
def test_align_then_inverse_warp_returns_face_within_1px_rms(face_px, angle):
    img, landmarks, dots, sigma = _scene_with_markers(face_px, angle)
    aligned, alignment = align_face(img, landmarks, 512)
    assert aligned.shape == (512, 512)
    back = warp_to_source(aligned, alignment, img.shape)
    r = int(3 * sigma)
    before = np.array([_centroid(img, p, r) for p in dots])
    after = np.array([_centroid(back, p, r) for p in dots])
    rms = float(np.sqrt(((before - after) ** 2).sum(1).mean()))
    assert rms < 1.0, rms


def test_round_trip_keeps_pixels_of_a_real_face(astronaut, astronaut_faces):
    face = astronaut_faces[0]
    aligned, alignment = align_face(astronaut, face, 512)
    back = warp_to_source(aligned, alignment, astronaut.shape)
    x1, y1, x2, y2 = (int(v) for v in face.box)
    a = astronaut[y1:y2, x1:x2].astype(np.float64)
    b = back[y1:y2, x1:x2].astype(np.float64)
    assert np.abs(a - b).mean() < 4.0  # two bilinear resamplings of a ~90 px face


def test_aligned_face_puts_landmarks_on_the_template(astronaut, astronaut_faces, dlib_detector):
    """The 5 points land on the template (up to this face's shape: a broad smile puts the mouth
    corners ~15 px of 512 outside the template's), and detecting again in the 512 crop finds
    them where the alignment said they would be."""
    aligned, alignment = align_face(astronaut, astronaut_faces[0], 512)
    mapped = alignment.to_aligned(np.asarray(astronaut_faces[0].landmarks))
    assert np.linalg.norm(mapped - canonical_template(512), axis=1).max() < 20
    assert np.linalg.norm(mapped[:3] - canonical_template(512)[:3], axis=1).max() < 10
    again = dlib_detector.detect(aligned, select="largest")
    assert len(again) == 1
    err = np.linalg.norm(np.asarray(again[0].landmarks) - mapped, axis=1)
    assert err.max() < 6, err


def test_similarity_is_exact_on_similar_point_sets_and_inverse_is_exact():
    src = FFHQ_TEMPLATE_512 * 0.3 @ _rotation(20).T + (40, 70)
    m = similarity_transform(src, FFHQ_TEMPLATE_512)
    al = Alignment(m, 512)
    np.testing.assert_allclose(al.to_aligned(src), FFHQ_TEMPLATE_512, atol=1e-9)
    np.testing.assert_allclose(al.to_source(al.to_aligned(src)), src, atol=1e-9)
    full = np.vstack([m, [0, 0, 1]]) @ np.vstack([invert_transform(m), [0, 0, 1]])
    np.testing.assert_allclose(full, np.eye(3), atol=1e-12)
    assert al.scale == pytest.approx(1 / 0.3)
    assert canonical_template(256) == pytest.approx(FFHQ_TEMPLATE_512 / 2)


def test_resized_alignment_matches_a_resized_crop(astronaut, astronaut_faces):
    aligned, alignment = align_face(astronaut, astronaut_faces[0], 512)
    small = cv2.resize(aligned, (256, 256), interpolation=cv2.INTER_AREA)
    direct, _ = align_face(astronaut, alignment.resized(256), 256)
    assert np.abs(small.astype(float) - direct.astype(float))[32:-32, 32:-32].mean() < 4


def test_paste_back_of_the_unchanged_face_restores_the_scene(astronaut, astronaut_faces):
    aligned, alignment = align_face(astronaut, astronaut_faces[0], 512)
    mask = paste_mask(alignment, astronaut.shape)
    out = paste_back(astronaut, aligned, alignment)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    assert np.array_equal(out[mask == 0], astronaut[mask == 0])  # untouched outside the mask
    inner = mask > 0.99
    assert inner.sum() > 1000
    assert np.abs(out[inner].astype(float) - astronaut[inner].astype(float)).mean() < 4.0
    # a bright "restored" face shows up inside, fades over the feather, not outside
    white = np.full_like(aligned, 255)
    lit = paste_back(astronaut, white, alignment)
    core = mask > 0.999
    assert core.sum() > 1000 and (lit[core] >= 254).all()
    assert np.array_equal(lit[mask == 0], astronaut[mask == 0])


def test_paste_back_takes_a_bare_matrix_and_names_a_bad_one(astronaut, astronaut_faces):
    aligned, alignment = align_face(astronaut, astronaut_faces[0], 512)
    by_matrix = paste_back(astronaut, aligned, alignment.matrix)
    assert np.array_equal(by_matrix, paste_back(astronaut, aligned, alignment))
    for bad in (np.eye(3), "M", None, np.full((2, 3), np.nan)):
        with pytest.raises(BadInputError, match="Alignment from align_face or a finite 2x3 matrix"):
            paste_back(astronaut, aligned, bad)


def test_paste_mask_feather_scales_with_face_size():
    widths = []
    for face_px in (60, 240):
        _, landmarks, _, _ = _scene_with_markers(face_px, 0)
        al = estimate_alignment(landmarks, 512)
        side = int(max(160, face_px * 2.6))
        m = paste_mask(al, (side, side))
        row = m[side // 2]
        assert row.max() == pytest.approx(1.0, abs=1e-3) and row[0] == 0 and row[-1] == 0
        widths.append(int(((row > 0.02) & (row < 0.98)).sum()))
    assert widths[1] > 2.5 * widths[0]


def test_face_blend_mask_one_at_centre_zero_at_edges():
    m = face_blend_mask(512)
    assert m[276, 256] == pytest.approx(1.0)
    assert m[0].max() == 0 and m[-1].max() == 0 and m[:, 0].max() == 0 and m[:, -1].max() == 0
    eyes = FFHQ_TEMPLATE_512.round().astype(int)
    assert (m[eyes[:, 1], eyes[:, 0]] > 0.9).all()  # eyes, nose, mouth fully GT


def test_insert_gt_face_composites_gt_at_the_face_prediction_elsewhere(astronaut, astronaut_faces):
    pred = np.zeros_like(astronaut)
    out = insert_gt_face(pred, astronaut, astronaut_faces)
    nose = np.round(astronaut_faces[0].landmarks[2]).astype(int)
    assert np.array_equal(out[nose[1], nose[0]], astronaut[nose[1], nose[0]])
    assert (out[-50:, -50:] == 0).all() and (out[:20, :20] == 0).all()
    # in between, a blend: strictly between the two images somewhere
    gap = (out.astype(int) > 0) & (out.astype(int) < astronaut.astype(int))
    assert gap.any()
    with pytest.raises(BadInputError):
        insert_gt_face(pred[:10], astronaut, astronaut_faces)


def test_bad_landmarks_and_images_are_bad_input():
    with pytest.raises(BadInputError):
        estimate_alignment(np.zeros((5, 2)))
    with pytest.raises(BadInputError):
        estimate_alignment(np.zeros((4, 2)))
    with pytest.raises(BadInputError):
        estimate_alignment(np.full((5, 2), np.nan))
    with pytest.raises(BadInputError):
        align_face(np.zeros((0, 10, 3), np.uint8), FFHQ_TEMPLATE_512)


def test_face_far_outside_the_image_pastes_nothing():
    scene = np.full((100, 100, 3), 7, np.uint8)
    al = estimate_alignment(FFHQ_TEMPLATE_512 * 0.1 + 5000)
    face = np.full((512, 512, 3), 200, np.uint8)
    assert np.array_equal(paste_back(scene, face, al), scene)
