"""Bad input: no face -> [], tiny images, grayscale, extreme aspect ratios; errors only for non-images.

Run over every registered detector: dlib (real), yolo-face (the tiny random model through its real
loading path), insightface (FaceAnalysis replaced, see test_backends.py). The checks that need
a detector that actually sees faces use dlib.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inscene.errors import BadInputError
from inscene.faces import create_detector, list_detectors
from inscene.faces import detectors as D

from .fakes import FakeFaceAnalysis


@pytest.fixture
def any_detector(request, tmp_path, monkeypatch, tiny_yolo_pt):
    name = request.param
    if name == "dlib":
        return create_detector("dlib")
    if name == "yolo-face":
        return create_detector("yolo-face", path=tiny_yolo_pt)
    pack = tmp_path / "antelopev2"
    pack.mkdir()
    for f in ("scrfd_10g_bnkps.onnx", "glintr100.onnx"):
        (pack / f).write_bytes(b"placeholder")
    fake = FakeFaceAnalysis([])
    monkeypatch.setattr(D, "_build_insightface_app", lambda *a: fake)
    det = create_detector("insightface", path=pack, providers=["CPUExecutionProvider"])
    det.fake = fake
    return det


def test_every_registered_detector_is_covered():
    assert set(list_detectors()) == {"dlib", "insightface", "yolo-face"}


@pytest.mark.parametrize("any_detector", ["dlib", "insightface", "yolo-face"], indirect=True)
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((480, 640, 3), np.uint8),  # blank: no face
        np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8),  # noise
        np.zeros((5, 5, 3), np.uint8),  # smaller than any detector's minimum
        np.zeros((30, 30, 3), np.uint8),
        np.zeros((300, 400), np.uint8),  # grayscale HxW
        np.zeros((300, 400, 1), np.uint8),  # grayscale HxWx1
        np.zeros((300, 400, 4), np.uint8),  # RGBA
        np.zeros((300, 400, 3), np.uint16),  # 16-bit
        np.zeros((200, 20000, 3), np.uint8),  # extreme aspect ratio
        np.zeros((20000, 200, 3), np.uint8),
    ],
    ids=["blank", "noise", "5x5", "30x30", "gray", "gray1", "rgba", "uint16", "200x20000", "20000x200"],
)
def test_no_face_is_an_empty_list(any_detector, image):
    assert any_detector.detect(image) == []
    fake = getattr(any_detector, "fake", None)
    if fake is not None and fake.seen:  # the backend was given a 3-channel BGR uint8 copy
        seen = fake.seen[-1]
        assert seen.ndim == 3 and seen.shape[2] == 3 and seen.dtype == np.uint8
        assert min(seen.shape[:2]) >= min(160, min(image.shape[:2]))


def test_non_images_are_bad_input(dlib_detector):
    for bad in (np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10, 2), np.uint8), np.zeros((10, 10, 3), np.float32)):
        with pytest.raises(BadInputError):
            dlib_detector.detect(bad)
    with pytest.raises(BadInputError):
        create_detector("no-such-detector")
    with pytest.raises(BadInputError):
        create_detector("dlib", no_such_option=1)
    with pytest.raises(BadInputError):
        dlib_detector.detect(np.zeros((50, 50, 3), np.uint8), select="smallest")


def test_grayscale_photo_still_finds_the_faces(t1, t1_faces, dlib_detector):
    gray = cv2.cvtColor(t1, cv2.COLOR_RGB2GRAY)
    assert len(dlib_detector.detect(gray)) == len(t1_faces)
    assert len(dlib_detector.detect(gray[:, :, None])) == len(t1_faces)


def test_face_in_a_20000x200_strip_is_found(astronaut, dlib_detector):
    """Downscaling by the longest side alone would squash the strip to 1024x10; the shorter side
    is kept at >= 160 px so the face survives."""
    strip = np.full((200, 20000, 3), 90, np.uint8)
    strip[:, 12000:12200] = astronaut[30:230, 120:320]
    faces = dlib_detector.detect(strip)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].box
    assert 12000 < x1 < x2 < 12200 and 0 <= y1 < y2 <= 200


def test_tiny_face_image_below_detector_minimum_is_empty(astronaut_faces, astronaut):
    x1, y1, x2, y2 = (int(v) for v in astronaut_faces[0].box)
    tiny = cv2.resize(astronaut[y1:y2, x1:x2], (12, 12), interpolation=cv2.INTER_AREA)
    assert create_detector("dlib").detect(tiny) == []
