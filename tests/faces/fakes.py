"""Stand-ins for insightface's model objects, for testing the adapter at that one boundary."""

from __future__ import annotations

import numpy as np


class FakeRecognition:
    """Stands in for insightface's ArcFaceONNX: records its input, returns a fixed raw feature."""

    input_size = (112, 112)

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def get(self, img, face):
        self.calls.append((img, np.asarray(face.kps)))
        return np.arange(1, 513, dtype=np.float32)  # not unit length on purpose


class FakeFaceAnalysis:
    """Stands in for insightface.app.FaceAnalysis after prepare(): ``get(bgr)`` -> Face objects."""

    def __init__(self, faces) -> None:
        self.faces = faces
        self.seen: list[np.ndarray] = []
        self.models = {"detection": object(), "recognition": FakeRecognition()}

    def get(self, img):
        self.seen.append(img)
        return list(self.faces)


def iface(box, kps, score):
    from insightface.app.common import Face as IFace

    return IFace(bbox=np.asarray(box, np.float32), kps=np.asarray(kps, np.float32), det_score=np.float32(score))
