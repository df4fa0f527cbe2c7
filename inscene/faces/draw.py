"""Draw detected faces (boxes, 5 landmarks, scores) on an image, for a person to look at."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from inscene.schema import Face

#: RGB colour of each canonical landmark: left eye, right eye, nose, left mouth, right mouth.
LANDMARK_COLORS = ((255, 40, 40), (40, 120, 255), (40, 220, 40), (255, 160, 0), (200, 0, 255))
BOX_COLOR = (0, 255, 0)


def draw_faces(image: np.ndarray, faces: Iterable[Face], *, label: bool = True) -> np.ndarray:
    """A copy of an RGB image with each face's box, landmarks and score drawn.

    Line width and dot size scale with the image; landmark colours follow
    :data:`LANDMARK_COLORS` (left eye red, right eye blue, nose green, left mouth orange,
    right mouth purple), so a swapped left/right is visible at a glance.
    """
    from inscene.faces.detectors import as_rgb_uint8

    out = as_rgb_uint8(image).copy()
    h, w = out.shape[:2]
    t = max(1, round(max(h, w) / 600))
    for f in faces:
        x1, y1, x2, y2 = (round(v) for v in f.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR, t, cv2.LINE_AA)
        r = max(2, round((x2 - x1) / 40), t + 1)
        if f.landmarks68 is not None:
            for x, y in f.landmarks68:
                cv2.circle(out, (round(x), round(y)), max(1, r // 2), (255, 255, 255), -1, cv2.LINE_AA)
        for (x, y), c in zip(f.landmarks, LANDMARK_COLORS, strict=True):
            cv2.circle(out, (round(x), round(y)), r, c, -1, cv2.LINE_AA)
        if label:
            scale = 0.4 * t
            cv2.putText(
                out,
                f"{f.score:.2f}",
                (x1, max(0, y1 - 3 * t)),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                BOX_COLOR,
                t,
                cv2.LINE_AA,
            )
    return out
