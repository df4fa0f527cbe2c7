"""The embedded (dlib) detector on real photos: the faces a person sees, landmarks in order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inscene.faces import create_detector, list_detectors
from inscene.faces.detectors import box_iou
from inscene.faces.landmarks import IBUG68_TO_5, five_from_68
from inscene.schema import Face

from .conftest import T1_FACES

# Centres of the six faces in t1.jpg and of the astronaut's face, as a person points at them.
T1_CENTRES = [(1182, 354), (118, 342), (797, 432), (519, 360), (956, 153), (326, 223)]
ASTRONAUT_CENTRE = (220, 120)


def _inside(box, point) -> bool:
    x1, y1, x2, y2 = box
    return x1 <= point[0] <= x2 and y1 <= point[1] <= y2


def _check_landmarks(face: Face) -> None:
    le, re, nose, lm, rm = np.asarray(face.landmarks)
    for p in (le, re, nose, lm, rm):
        assert _inside(face.box, p), (face.box, p)
    assert le[0] < re[0] and lm[0] < rm[0]  # left as seen in the image
    eyes_y, mouth_y = (le[1] + re[1]) / 2, (lm[1] + rm[1]) / 2
    assert eyes_y < nose[1] < mouth_y


def test_registry_lists_the_three_backends():
    assert {"dlib", "insightface", "yolo-face"} <= set(list_detectors())


def test_t1_all_six_people_found_with_ordered_landmarks(t1_faces):
    assert len(t1_faces) == T1_FACES
    for centre in T1_CENTRES:
        assert sum(_inside(f.box, centre) for f in t1_faces) == 1, centre
    for f in t1_faces:
        assert sum(_inside(f.box, c) for c in T1_CENTRES) == 1, f.box
        _check_landmarks(f)
        assert f.backend == "dlib-hog+dlib-shape68"
        assert f.landmarks68 is not None and len(f.landmarks68) == 68
        Face.model_validate(f.model_dump())  # a valid record
    scores = [f.score for f in t1_faces]
    assert scores == sorted(scores, reverse=True)


def test_astronaut_one_face_and_not_the_mission_patch(astronaut_faces):
    # dlib's HOG alone also fires on the round mission patch (score ~0.12); the MMOD second
    # look must drop it.
    assert len(astronaut_faces) == 1
    assert _inside(astronaut_faces[0].box, ASTRONAUT_CENTRE)
    _check_landmarks(astronaut_faces[0])


def test_68_to_5_mapping_is_eye_centres_nose_tip_mouth_corners():
    pts = np.arange(136, dtype=float).reshape(68, 2)
    five = five_from_68(pts)
    np.testing.assert_allclose(five[0], pts[36:42].mean(0))
    np.testing.assert_allclose(five[1], pts[42:48].mean(0))
    np.testing.assert_allclose(five[2], pts[30])
    np.testing.assert_allclose(five[3], pts[48])
    np.testing.assert_allclose(five[4], pts[54])
    assert len(IBUG68_TO_5) == 5


def test_select_largest_and_min_size(t1, t1_faces, dlib_detector):
    largest = dlib_detector.detect(t1, select="largest")
    assert len(largest) == 1
    assert largest[0].area == pytest.approx(max(f.area for f in t1_faces))
    widths = sorted(min(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in t1_faces)
    cut = (widths[0] + widths[1]) / 2
    kept = dlib_detector.detect(t1, min_size=cut)
    assert len(kept) == T1_FACES - 1
    assert all(min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= cut for f in kept)


def test_downscaled_detection_maps_boxes_and_landmarks_back(t1, t1_faces):
    """On a 3x enlarged t1 (3840 px), detection runs on a 1024 px copy; the faces come back in
    the big image's pixels, where they are 3x the faces found on the original."""
    big = cv2.resize(t1, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    faces = create_detector("dlib", max_side=1024).detect(big)
    assert len(faces) == T1_FACES
    for f in t1_faces:
        ref = np.asarray(f.box) * 3
        match = max(faces, key=lambda g: box_iou(ref, np.asarray(g.box)))
        assert box_iou(ref, np.asarray(match.box)) > 0.8
        err = np.abs(np.asarray(match.landmarks) - (np.asarray(f.landmarks) + 0.5) * 3 + 0.5)
        assert err.max() < 0.1 * (ref[2] - ref[0])


def test_mmod_model_finds_the_astronaut(astronaut):
    faces = create_detector("dlib", model="mmod", upsample=0).detect(astronaut)
    assert len(faces) == 1 and _inside(faces[0].box, ASTRONAUT_CENTRE)
    assert faces[0].backend == "dlib-mmod+dlib-shape68"
