"""Identity embedders: same face scores above the backend's threshold, different people below."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from inscene.errors import BadInputError
from inscene.faces import create_embedder, list_embedders
from inscene.faces.embedders import cosine_similarity

from .conftest import T1_FACES


@pytest.fixture(scope="module")
def dlib_embedder():
    emb = create_embedder("dlib")
    emb.load()
    return emb


def _crop(img: np.ndarray, box, margin: float = 1.0) -> np.ndarray:
    x1, y1, x2, y2 = box
    m = margin * (x2 - x1)
    h, w = img.shape[:2]
    rows = slice(max(0, int(y1 - m)), min(h, int(y2 + m)))
    cols = slice(max(0, int(x1 - m)), min(w, int(x2 + m)))
    return np.ascontiguousarray(img[rows, cols])


def _copies(img: np.ndarray) -> dict[str, np.ndarray]:
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert ok
    return {
        "flipped": np.ascontiguousarray(img[:, ::-1]),
        "0.6x": cv2.resize(img, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA),
        "1.5x": cv2.resize(img, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC),
        "jpeg40": np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]),
    }


def _embed_largest(det, emb, img):
    faces = det.detect(img, select="largest")
    assert len(faces) == 1
    return emb.embed(img, faces[0])


def test_registry_and_declared_metadata():
    assert {"dlib", "arcface"} <= set(list_embedders())
    d, a = create_embedder("dlib"), create_embedder("arcface")
    assert (d.dim, d.metric, d.threshold) == (128, "cosine", 0.92)
    assert (a.dim, a.metric, a.threshold) == (512, "cosine", 0.55)  # §6.1
    with pytest.raises(BadInputError):
        create_embedder("nope")


def test_dlib_same_face_above_threshold_different_people_below(t1, t1_faces, astronaut, dlib_detector, dlib_embedder):
    emb = dlib_embedder
    same = []
    for name, img in [("astronaut", astronaut)] + [(f"t1-{i}", _crop(t1, f.box)) for i, f in enumerate(t1_faces)]:
        base = _embed_largest(dlib_detector, emb, img)
        assert base.shape == (128,) and np.linalg.norm(base) == pytest.approx(1.0, abs=1e-5)
        for kind, copy in _copies(img).items():
            same.append((emb.similarity(base, _embed_largest(dlib_detector, emb, copy)).max, name, kind))
    people = emb.embed_faces(t1, t1_faces)
    assert people.shape == (T1_FACES, 128)
    people = np.vstack([people, _embed_largest(dlib_detector, emb, astronaut)])
    different = [emb.similarity(people[i], people[j]).max for i, j in itertools.combinations(range(len(people)), 2)]
    assert min(same)[0] > emb.threshold, min(same)
    assert max(different) < emb.threshold, max(different)
    assert all(emb.same_identity(s) for s, _, _ in same)
    assert not any(emb.same_identity(s) for s in different)


def test_similarity_against_many_references_mean_and_max():
    q = np.array([1.0, 0.0, 0.0])
    refs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.0, 2.0, 0.0]])
    sim = cosine_similarity(q, refs)
    assert sim.max == pytest.approx(1.0)
    assert sim.mean == pytest.approx((1 + 0 + np.sqrt(0.5)) / 3)
    assert sim.per_reference == pytest.approx((1.0, 0.0, np.sqrt(0.5)))
    assert cosine_similarity(q, q).max == pytest.approx(1.0)
    with pytest.raises(BadInputError):
        cosine_similarity(q, np.zeros((0, 3)))
    with pytest.raises(BadInputError):
        cosine_similarity(q, np.ones(4))
    with pytest.raises(BadInputError):
        cosine_similarity(np.zeros(3), refs)
