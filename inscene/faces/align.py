"""Canonical face alignment, the exact inverse warp, feathered paste-back and GT-face insertion.

Face2Scene §3.1: a detected face is mapped to a canonical template, warped to 512x512 for the
Ref-FR model, and the restored face is warped back with the inverse transform (including the
inverse of the resize) to its native scale and place in the scene. Table 3's "GT Face Inserted"
rows composite the ground-truth face into a prediction as ``M * I_GT + (1 - M) * P`` with a mask
that is one at the face centre and falls to zero at its edges.

The template is the FFHQ-style 5-point template that face restorers use at 512 (the one in
facexlib's ``FaceRestoreHelper``). The paper describes the alignment as rotation + translation
followed by a resize, i.e. a similarity transform. We fit it by least squares over all 5 points
(closed form), where facexlib uses ``cv2.estimateAffinePartial2D(method=LMEDS)``; on clean
landmarks both give the same transform, and least squares is deterministic.

Conventions: points are ``(x, y)`` pixels with pixel centres at integer coordinates (OpenCV's
convention); a transform is a 2x3 float64 matrix mapping source-image points to aligned points.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from inscene.errors import BadInputError

#: FFHQ 5-point template at 512x512: left eye, right eye, nose, left mouth, right mouth
#: (left/right as seen in the image).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)

Border = Literal["reflect", "constant", "replicate"]
_BORDERS = {
    "reflect": cv2.BORDER_REFLECT_101,
    "constant": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
}


def canonical_template(size: int = 512) -> np.ndarray:
    """The 5-point template scaled to a ``size`` x ``size`` crop (``(5, 2)`` float64)."""
    if size <= 0:
        raise BadInputError(f"aligned size must be positive, got {size}")
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Solves ``dst ~ s R src + t`` over all point pairs in closed form (no reflection).

    Args:
        src: ``(N, 2)`` points, N >= 2.
        dst: ``(N, 2)`` points.

    Returns:
        2x3 float64 matrix ``[[a, -b, tx], [b, a, ty]]``.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise BadInputError(f"need matching point sets of >= 2 points, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise BadInputError("landmarks must be finite numbers")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = float((s**2).sum())
    if var < 1e-12:
        raise BadInputError("landmarks are degenerate (all points coincide)")
    # With z = x + iy, the best complex factor is c = sum(conj(s) d) / sum(|s|^2).
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / var
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / var
    tx = mu_d[0] - (a * mu_s[0] - b * mu_s[1])
    ty = mu_d[1] - (b * mu_s[0] + a * mu_s[1])
    return np.array([[a, -b, tx], [b, a, ty]], dtype=np.float64)


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to ``(N, 2)`` points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """Exact inverse of a 2x3 affine matrix (closed form)."""
    A = np.asarray(matrix, dtype=np.float64)[:, :2]
    t = np.asarray(matrix, dtype=np.float64)[:, 2]
    det = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
    if abs(det) < 1e-18:
        raise BadInputError("transform is singular")
    Ai = np.array([[A[1, 1], -A[0, 1]], [-A[1, 0], A[0, 0]]]) / det
    return np.hstack([Ai, (-Ai @ t)[:, None]])


@dataclass(frozen=True)
class Alignment:
    """A similarity transform from a source image to a ``size`` x ``size`` aligned crop.

    Attributes:
        matrix: 2x3 source -> aligned.
        size: side of the aligned crop in pixels.
    """

    matrix: np.ndarray
    size: int

    @property
    def inverse(self) -> np.ndarray:
        """2x3 aligned -> source (exact inverse of :attr:`matrix`)."""
        return invert_transform(self.matrix)

    @property
    def scale(self) -> float:
        """Aligned pixels per source pixel."""
        return float(np.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    @property
    def angle_degrees(self) -> float:
        """Rotation applied to the source (counter-clockwise in image axes is negative)."""
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0])))

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """Map source points into the aligned crop."""
        return apply_transform(self.matrix, points)

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Map aligned-crop points back to the source image."""
        return apply_transform(self.inverse, points)

    def resized(self, size: int) -> Alignment:
        """The alignment of this crop after ``cv2.resize`` to ``size`` x ``size``.

        Pixel centres map as ``u' = (u + 0.5) * size / self.size - 0.5``.
        """
        k = size / self.size
        m = self.matrix * k
        m[:, 2] += 0.5 * k - 0.5
        return Alignment(m, size)

    def source_quad(self) -> np.ndarray:
        """Corners of the aligned square in source coordinates (``(4, 2)``)."""
        s = self.size - 0.5
        return self.to_source(np.array([[-0.5, -0.5], [s, -0.5], [s, s], [-0.5, s]]))


def _landmarks_array(landmarks: object) -> np.ndarray:
    pts = getattr(landmarks, "landmarks", landmarks)  # a Face record or an array-like
    arr = np.asarray(pts, dtype=np.float64)
    if arr.shape != (5, 2):
        raise BadInputError(f"need 5 landmarks as (5, 2), got shape {arr.shape}")
    return arr


def estimate_alignment(landmarks: object, size: int = 512) -> Alignment:
    """Fit the similarity that maps 5 landmarks (or a ``Face``) onto the canonical template.

    Args:
        landmarks: ``(5, 2)`` points in the order left eye, right eye, nose, left mouth, right
            mouth, or a :class:`inscene.schema.Face`.
        size: side of the aligned crop (the template scales with it).
    """
    return Alignment(similarity_transform(_landmarks_array(landmarks), canonical_template(size)), size)


def _check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadInputError(f"{what} must be HxW or HxWxC with non-zero size, got shape {arr.shape}")
    return arr


def _warp(image: np.ndarray, matrix: np.ndarray, dsize: tuple[int, int], border: Border, flags: int) -> np.ndarray:
    if border not in _BORDERS:
        raise BadInputError(f"border must be one of {sorted(_BORDERS)}, got {border!r}")
    arr = np.ascontiguousarray(image)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if channels <= 4:
        out = cv2.warpAffine(arr, matrix, dsize, flags=flags, borderMode=_BORDERS[border], borderValue=0)
        if arr.ndim == 3 and out.ndim == 2:
            out = out[:, :, None]
        return out
    # OpenCV warps at most 4 channels at once.
    parts = [_warp(arr[:, :, i : i + 4], matrix, dsize, border, flags) for i in range(0, channels, 4)]
    return np.concatenate(parts, axis=2)


def _interp(scale: float) -> int:
    # Shrinking by more than ~1.5x with bilinear sampling aliases: use area averaging there.
    return cv2.INTER_AREA if scale < 1 / 1.5 else cv2.INTER_LINEAR


def align_face(
    image: np.ndarray,
    landmarks: object,
    size: int = 512,
    *,
    border: Border = "reflect",
) -> tuple[np.ndarray, Alignment]:
    """Warp a face into the canonical ``size`` x ``size`` frame.

    Args:
        image: HxW or HxWxC array (any dtype OpenCV warps: uint8, uint16, float32...).
        landmarks: 5 landmarks in ``image`` pixels, a ``Face``, or an :class:`Alignment`.
        size: output side.
        border: how pixels outside the image are filled (``reflect`` by default; paper silent).

    Returns:
        The aligned crop and the :class:`Alignment` that produced it.
    """
    arr = _check_image(image)
    alignment = landmarks if isinstance(landmarks, Alignment) else estimate_alignment(landmarks, size)
    if alignment.size != size:
        alignment = alignment.resized(size)
    if alignment.scale < 1 / 1.5:
        # cv2.INTER_AREA ignores non-scaling warps: pre-shrink the source, then warp the rest.
        k = alignment.scale * 1.25
        h, w = arr.shape[:2]
        small = cv2.resize(arr, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        if arr.ndim == 3 and small.ndim == 2:
            small = small[:, :, None]
        kx, ky = small.shape[1] / w, small.shape[0] / h
        # small pixel centre u corresponds to source x = (u + 0.5) / kx - 0.5
        to_src = np.array([[1 / kx, 0, 0.5 / kx - 0.5], [0, 1 / ky, 0.5 / ky - 0.5]])
        m = alignment.matrix[:, :2] @ to_src[:, :2]
        t = alignment.matrix[:, :2] @ to_src[:, 2] + alignment.matrix[:, 2]
        out = _warp(small, np.hstack([m, t[:, None]]), (size, size), border, cv2.INTER_LINEAR)
    else:
        out = _warp(arr, alignment.matrix, (size, size), border, cv2.INTER_LINEAR)
    return out, alignment


def _roi(alignment: Alignment, shape: Sequence[int], pad: int = 2) -> tuple[int, int, int, int] | None:
    """Source-image rectangle (x0, y0, x1, y1) covered by the aligned square, clipped."""
    h, w = int(shape[0]), int(shape[1])
    q = alignment.source_quad()
    x0 = max(0, int(np.floor(q[:, 0].min())) - pad)
    y0 = max(0, int(np.floor(q[:, 1].min())) - pad)
    x1 = min(w, int(np.ceil(q[:, 0].max())) + pad + 1)
    y1 = min(h, int(np.ceil(q[:, 1].max())) + pad + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _inverse_into_roi(alignment: Alignment, x0: int, y0: int) -> np.ndarray:
    inv = alignment.inverse.copy()
    inv[:, 2] -= (x0, y0)
    return inv


def warp_to_source(face: np.ndarray, alignment: Alignment, shape: Sequence[int], *, fill: float = 0) -> np.ndarray:
    """Inverse warp: an aligned crop back to source-image coordinates.

    Args:
        face: the aligned crop (``alignment.size`` square, or any square: it is rescaled).
        alignment: the transform that produced the crop.
        shape: ``(H, W)`` (or ``(H, W, C)``) of the source image.
        fill: value outside the warped square.

    Returns:
        An array of the source's height and width with the face at its native scale and place.
    """
    arr = _check_image(face, "face")
    if arr.shape[0] != arr.shape[1]:
        raise BadInputError(f"aligned face must be square, got {arr.shape[:2]}")
    if arr.shape[0] != alignment.size:
        alignment = alignment.resized(arr.shape[0])
    h, w = int(shape[0]), int(shape[1])
    out_shape = (h, w) + arr.shape[2:]
    out = np.full(out_shape, fill, dtype=arr.dtype)
    roi = _roi(alignment, (h, w))
    if roi is None:
        return out
    x0, y0, x1, y1 = roi
    flags = _interp(1.0 / alignment.scale)
    if flags == cv2.INTER_AREA:
        # Going back shrinks the crop by a lot: pre-shrink it with area averaging first.
        k = min(1.0, 1.25 / alignment.scale)
        n = max(1, round(arr.shape[0] * k))
        small = cv2.resize(np.ascontiguousarray(arr), (n, n), interpolation=cv2.INTER_AREA)
        if arr.ndim == 3 and small.ndim == 2:
            small = small[:, :, None]
        alignment = alignment.resized(n)
        arr = small
    patch = _warp(arr, _inverse_into_roi(alignment, x0, y0), (x1 - x0, y1 - y0), "constant", cv2.INTER_LINEAR)
    inside = (
        _warp(
            np.ones(arr.shape[:2], np.float32),
            _inverse_into_roi(alignment, x0, y0),
            (x1 - x0, y1 - y0),
            "constant",
            cv2.INTER_NEAREST,
        )
        > 0.5
    )
    region = out[y0:y1, x0:x1]
    region[inside] = patch[inside]
    return out


def paste_mask(alignment: Alignment, shape: Sequence[int]) -> np.ndarray:
    """Feathered paste-back mask in source coordinates (float32 in [0, 1], HxW).

    The aligned square is warped back, eroded, then eroded by ``2 * w_edge`` and blurred so its
    edge fades over ``w_edge = sqrt(area) // 20`` pixels: the feather scales with the face size
    (the recipe face restorers use when pasting faces back).
    """
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), np.float32)
    roi = _roi(alignment, (h, w), pad=4)
    if roi is None:
        return mask
    x0, y0, x1, y1 = roi
    ones = np.ones((alignment.size, alignment.size), np.float32)
    local = _warp(ones, _inverse_into_roi(alignment, x0, y0), (x1 - x0, y1 - y0), "constant", cv2.INTER_LINEAR)
    # Pad so erosion also feathers where the face meets the image border.
    pad_m = max(8, int(np.sqrt(local.sum())) // 10 * 3)
    local = cv2.copyMakeBorder((local > 0.999).astype(np.float32), pad_m, pad_m, pad_m, pad_m, cv2.BORDER_REPLICATE)
    local = cv2.erode(local, np.ones((3, 3), np.uint8))
    w_edge = max(1, int(np.sqrt(float(local.sum()))) // 20)
    k = 2 * w_edge + 1
    local = cv2.erode(local, np.ones((k, k), np.uint8))
    local = cv2.GaussianBlur(local, (2 * k + 1, 2 * k + 1), 0)
    mask[y0:y1, x0:x1] = local[pad_m:-pad_m, pad_m:-pad_m]
    return np.clip(mask, 0.0, 1.0)


def _blend(base: np.ndarray, top: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if base.shape[:2] != top.shape[:2] or base.shape[:2] != mask.shape[:2]:
        raise BadInputError(f"shapes differ: {base.shape}, {top.shape}, mask {mask.shape}")
    m = mask.astype(np.float32)
    if base.ndim == 3:
        m = m[:, :, None]
    out = m * top.astype(np.float32) + (1.0 - m) * base.astype(np.float32)
    if np.issubdtype(base.dtype, np.integer):
        info = np.iinfo(base.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(base.dtype)


def paste_back(scene: np.ndarray, face: np.ndarray, alignment: Alignment, mask: np.ndarray | None = None) -> np.ndarray:
    """Paste an aligned (e.g. restored) face back into the scene it came from.

    Args:
        scene: HxWxC source image (not modified).
        face: aligned crop (square; rescaled if not ``alignment.size``).
        alignment: the transform from :func:`align_face`, or its bare 2x3 source -> aligned
            matrix for a crop of ``face``'s size.
        mask: optional HxW blend mask in source coordinates; default :func:`paste_mask`.

    Returns:
        A new scene with the face blended in.

    Raises:
        BadInputError: mismatched channels, or ``alignment`` neither an Alignment nor a 2x3 matrix.
    """
    scene = _check_image(scene, "scene")
    face = _check_image(face, "face")
    if not isinstance(alignment, Alignment):
        try:
            matrix = np.asarray(alignment, dtype=np.float64) if alignment is not None else None
        except (TypeError, ValueError):
            matrix = None
        if matrix is None or matrix.shape != (2, 3) or not np.isfinite(matrix).all():
            raise BadInputError(
                f"alignment must be the Alignment from align_face or a finite 2x3 matrix, got "
                f"{type(alignment).__name__} {getattr(matrix, 'shape', '')}"
            )
        alignment = Alignment(matrix, int(face.shape[0]))
    if (scene.ndim == 3) != (face.ndim == 3) or (scene.ndim == 3 and scene.shape[2] != face.shape[2]):
        raise BadInputError(f"scene {scene.shape} and face {face.shape} have different channels")
    if face.shape[0] != alignment.size:
        alignment = alignment.resized(face.shape[0])
    back = warp_to_source(face, alignment, scene.shape)
    if mask is None:
        mask = paste_mask(alignment, scene.shape)
    return _blend(scene, back, mask)


def face_blend_mask(size: int = 512, feather: float = 0.35) -> np.ndarray:
    """Soft face mask in the aligned frame: one at the face centre, zero at the edges.

    An ellipse around the template face (eyes to chin, ear to ear) with a smooth (smoothstep)
    fall-off over the outer ``feather`` fraction of its radius; zero on the crop's border.
    The paper (Table 3, "GT Face Inserted") specifies only "centre one, zero at the edges";
    the ellipse's extent is our choice.
    """
    if not 0 < feather <= 1:
        raise BadInputError(f"feather must be in (0, 1], got {feather}")
    k = size / 512.0
    cx, cy = 256.0 * k, 276.0 * k
    ax, ay = 190.0 * k, 230.0 * k
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.sqrt(((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2)
    t = np.clip((1.0 - r) / feather, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def insert_gt_face(
    prediction: np.ndarray,
    ground_truth: np.ndarray,
    faces: Iterable[object],
    *,
    size: int = 512,
    feather: float = 0.35,
) -> np.ndarray:
    """Composite the ground-truth faces into a prediction: ``M * I_GT + (1 - M) * P`` (Table 3).

    Args:
        prediction: the restored image P.
        ground_truth: the GT image, same shape.
        faces: ``Face`` records or ``(5, 2)`` landmarks, in GT pixels.
        size: aligned frame in which :func:`face_blend_mask` is defined.
        feather: see :func:`face_blend_mask`.

    Returns:
        The composite (dtype of ``prediction``).
    """
    pred = _check_image(prediction, "prediction")
    gt = _check_image(ground_truth, "ground truth")
    if pred.shape != gt.shape:
        raise BadInputError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    soft = face_blend_mask(size, feather)
    mask = np.zeros(pred.shape[:2], np.float32)
    for f in faces:
        alignment = estimate_alignment(f, size)
        mask = np.maximum(mask, warp_to_source(soft, alignment, pred.shape))
    return _blend(pred, gt, mask)
