"""Stage I: detect -> align to the canonical 512 frame -> Ref-FR -> exact inverse warp (Face2Scene §3.1).

Given a degraded scene I_LQ (and the identity's aligned references), Stage I

1. detects the face in I_LQ (the :mod:`inscene.faces` detector registry; the largest face),
2. fits the similarity (rotation, uniform scale, translation) of its 5 landmarks to the canonical
   template and warps the face to ``size`` x ``size`` (512, §3.1) with :func:`inscene.faces.align.align_face`,
3. runs a Ref-FR backend (:mod:`restorer.reffr`) on the aligned LQ face and references,
4. warps the result back with the exact inverse transform, including the inverse of the resize
   (:func:`inscene.faces.align.warp_to_source`), to the face's native scale and position,

and returns the spatially aligned pair (x_HQ, x_LQ) cut from scene coordinates, with the transform
and the crop box.

The pair's crop box (paper: "a squared crop") is the largest axis-aligned square inside the rotated
square that the aligned frame covers in the scene, less one pixel of margin, so x_HQ is defined at
every pixel of the pair (no black corners for rotated faces); where the square leaves the image it is
clipped to the image (the pair is then a rectangle). Its side is about 4x the eye distance (the
template frames hair and chin), ~1.7x a detector's face box.

A face whose box (or pair crop) is smaller than ``min_face_px`` (16: the smallest crop FaDeX + MapNet
can use, §9.3; :class:`restorer.model.Face2Scene` raises it to 8 x its FaDeX's total stride when that
is larger), or no face at all, gives a :class:`Stage1Result` with ``ok=False`` and the reason: the
restorer then runs without degradation tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inscene.config import RestorerSettings
from inscene.errors import BadInputError
from inscene.faces.align import Alignment, align_face, estimate_alignment, warp_to_source
from inscene.schema import Face
from restorer.reffr import RefFR, RefFRBatch, create_ref_fr

_RS = RestorerSettings()

__all__ = ["Stage1", "Stage1Job", "Stage1Result", "pair_box", "crop_alignment"]


@dataclass
class Stage1Result:
    """What Stage I produced for one image.

    Attributes:
        ok: True when a usable face gave a pair.
        reason: why not (``"no face"``, ``"face too small: ..."``), ``""`` when ok.
        face: the face used (LQ pixels), when one was found.
        alignment: scene -> aligned-frame similarity (``size`` x ``size``).
        box: the pair's crop box ``(x0, y0, x1, y1)`` in scene pixels (exclusive ends).
        x_hq: the restored face at native scale, cut to ``box`` (uint8 RGB).
        x_lq: the degraded scene cut to ``box`` (uint8 RGB).
        x_gt: the ground-truth scene cut to ``box``, when a GT image was given.
        aligned_lq: the aligned LQ face fed to Ref-FR.
        aligned_hq: Ref-FR's aligned output.
        face_source: where the landmarks came from: ``detected`` (in I_LQ) or ``given``.
    """

    ok: bool
    reason: str = ""
    face: Face | None = None
    alignment: Alignment | None = None
    box: tuple[int, int, int, int] | None = None
    x_hq: np.ndarray | None = None
    x_lq: np.ndarray | None = None
    x_gt: np.ndarray | None = None
    aligned_lq: np.ndarray | None = None
    aligned_hq: np.ndarray | None = None
    face_source: str = ""

    @property
    def pair(self) -> np.ndarray:
        """``[x_HQ || x_LQ]`` as one H x W x 6 uint8 array (what FaDeX reads)."""
        if not self.ok or self.x_hq is None or self.x_lq is None:
            raise BadInputError(f"no face pair: {self.reason or 'Stage I did not run'}")
        return np.concatenate([self.x_hq, self.x_lq], axis=2)

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-friendly description (no pixels)."""
        out: dict[str, Any] = {"ok": self.ok, "reason": self.reason, "face_source": self.face_source}
        if self.box is not None:
            out["box"] = list(self.box)
        if self.alignment is not None:
            out["matrix"] = np.asarray(self.alignment.matrix).round(8).tolist()
            out["aligned_size"] = self.alignment.size
        if self.face is not None:
            out["face_box"] = [round(float(v), 3) for v in self.face.box]
        return out


@dataclass
class Stage1Job:
    """One image for :meth:`Stage1.run_many`.

    Attributes:
        lq: the degraded scene, H x W x 3 uint8 RGB.
        references: the identity's references, already aligned to ``size`` (see
            :meth:`Stage1.align_references`).
        ground_truth: the clean scene (same size as ``lq``), for the ``gt`` backend and ``x_gt``.
        face: landmarks to use instead of detecting in ``lq``.
        identity: identity id (FaceMe batches per identity).
    """

    lq: np.ndarray
    references: list[np.ndarray] = field(default_factory=list)
    ground_truth: np.ndarray | None = None
    face: Face | None = None
    identity: str | None = None


def crop_alignment(alignment: Alignment, x0: int, y0: int) -> Alignment:
    """The same transform, for source coordinates relative to a crop starting at ``(x0, y0)``."""
    m = np.array(alignment.matrix, dtype=np.float64, copy=True)
    m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
    return Alignment(m, alignment.size)


def pair_box(alignment: Alignment, shape: Sequence[int], margin: float = 1.0) -> tuple[int, int, int, int] | None:
    """The pair's crop box: the largest axis-aligned square inside the aligned frame's footprint.

    Args:
        alignment: scene -> aligned transform.
        shape: ``(H, W)`` of the scene.
        margin: source pixels kept clear of the footprint's edge (bilinear sampling needs ~1).

    Returns:
        ``(x0, y0, x1, y1)`` clipped to the image (exclusive ends), or None when nothing is left.
    """
    h, w = int(shape[0]), int(shape[1])
    size = alignment.size
    c = alignment.to_source(np.array([[(size - 1) / 2.0, (size - 1) / 2.0]]))[0]
    side = size / alignment.scale
    theta = math.radians(alignment.angle_degrees)
    half = side / (2.0 * (abs(math.cos(theta)) + abs(math.sin(theta)))) - margin
    if half <= 0:
        return None
    x0 = max(0, math.ceil(c[0] - half))
    y0 = max(0, math.ceil(c[1] - half))
    x1 = min(w, math.floor(c[0] + half) + 1)
    y1 = min(h, math.floor(c[1] + half) + 1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1, y1


def _warp_back(face: np.ndarray, local: Alignment, shape: tuple[int, int], band_limited: bool) -> np.ndarray:
    """Aligned crop -> pair box (``local`` maps box pixels to the aligned frame).

    A real Ref-FR output may hold detail the scene grid cannot: it goes through
    :func:`inscene.faces.align.warp_to_source`, which prefilters (area) when it shrinks. A crop
    resampled from the scene itself (``band_limited``) is sampled back directly with the exact
    inverse (bilinear): the prefilter would only blur it (measured on a 40 px face: 30 dB vs 45 dB
    round-trip PSNR).
    """
    if face.shape[0] != local.size:
        local = local.resized(face.shape[0])
    if not band_limited or local.scale <= 1.5:
        return warp_to_source(face, local, (shape[0], shape[1], 3))
    import cv2

    out = cv2.warpAffine(np.ascontiguousarray(face), local.inverse, (shape[1], shape[0]), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return out


def _rgb(image: Any, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadInputError(f"{what} must be an HxWx3 uint8 RGB image, got {arr.shape} {arr.dtype}")
    return arr


class Stage1:
    """Stage I with one Ref-FR backend and one face detector.

    Args:
        ref_fr: backend name (``faceme``, ``gt``, ``passthrough``) or instance.
        detector: detector name (default: ``faces.detector``, i.e. dlib), instance, or None (then
            every job must carry its ``face``).
        size: aligned frame side (512, §3.1).
        min_face_px: smallest usable face box and pair-crop side (16, §9.3; a restorer raises it to
            its FaDeX's :attr:`restorer.fadex.FadexConfig.min_face_px`).
        ref_fr_opts: options for :func:`restorer.reffr.create_ref_fr`.
        detector_opts: options for :func:`inscene.faces.create_detector`.
    """

    def __init__(
        self,
        ref_fr: str | RefFR = "gt",
        detector: Any = "default",
        *,
        size: int = _RS.face_size,
        min_face_px: int = _RS.min_face_px,
        ref_fr_opts: dict[str, Any] | None = None,
        detector_opts: dict[str, Any] | None = None,
    ) -> None:
        if size < 16:
            raise BadInputError(f"aligned size must be >= 16, got {size}")
        if min_face_px < 1:
            raise BadInputError(f"min_face_px must be >= 1, got {min_face_px}")
        self.ref_fr = create_ref_fr(ref_fr, **(ref_fr_opts or {})) if isinstance(ref_fr, str) else ref_fr
        if detector == "default":
            from inscene.config import FaceSettings

            detector = FaceSettings().detector
        if isinstance(detector, str):
            from inscene.faces import create_detector

            detector = create_detector(detector, **(detector_opts or {}))
        self.detector = detector
        self.size = int(size)
        self.min_face_px = int(min_face_px)

    # -- pieces ---------------------------------------------------------------------------------

    def find_face(self, image: np.ndarray) -> Face | None:
        """The largest face the detector finds in ``image`` (None when none)."""
        if self.detector is None:
            raise BadInputError("Stage I has no detector: give each image's face landmarks")
        faces = self.detector.detect(image, select="largest")
        return faces[0] if faces else None

    def align_references(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Detect the largest face of each reference photo and align it to ``size`` (skips face-less ones)."""
        out = []
        for img in images:
            img = _rgb(img, "reference")
            if img.shape[:2] == (self.size, self.size):
                out.append(img)  # already an aligned crop
                continue
            face = self.find_face(img)
            if face is not None:
                out.append(align_face(img, face, self.size)[0])
        return out

    def _usable(self, face: Face | None) -> str:
        if face is None:
            return "no face"
        x1, y1, x2, y2 = face.box
        side = min(x2 - x1, y2 - y1)
        if side < self.min_face_px:
            return f"face too small: {side:.1f} px < {self.min_face_px} px"
        return ""

    # -- the stage --------------------------------------------------------------------------------

    def run(
        self,
        lq: np.ndarray,
        *,
        references: Sequence[np.ndarray] = (),
        ground_truth: np.ndarray | None = None,
        face: Face | None = None,
        identity: str | None = None,
    ) -> Stage1Result:
        """Stage I on one scene; see :class:`Stage1Job` for the arguments."""
        return self.run_many([Stage1Job(lq, list(references), ground_truth, face, identity)])[0]

    def run_many(self, jobs: Sequence[Stage1Job]) -> list[Stage1Result]:
        """Stage I on several scenes with one Ref-FR call (FaceMe runs once per identity)."""
        results: list[Stage1Result] = []
        todo: list[tuple[int, Stage1Job, Face, Alignment, np.ndarray, np.ndarray | None]] = []
        for job in jobs:
            lq = _rgb(job.lq, "LQ image")
            gt = None
            if job.ground_truth is not None:
                gt = _rgb(job.ground_truth, "ground-truth image")
                if gt.shape != lq.shape:
                    raise BadInputError(f"ground truth {gt.shape} and LQ {lq.shape} differ in size")
            face, source = (job.face, "given") if job.face is not None else (self.find_face(lq), "detected")
            reason = self._usable(face)
            if reason:
                results.append(Stage1Result(ok=False, reason=reason, face=face, face_source=source))
                continue
            assert face is not None
            alignment = estimate_alignment(face, self.size)
            box = pair_box(alignment, lq.shape)
            if box is None or min(box[2] - box[0], box[3] - box[1]) < self.min_face_px:
                results.append(Stage1Result(ok=False, reason="face crop outside the image or below "
                                            f"{self.min_face_px} px", face=face, face_source=source))
                continue
            aligned_lq, _ = align_face(lq, alignment, self.size)
            aligned_gt = align_face(gt, alignment, self.size)[0] if gt is not None else None
            results.append(Stage1Result(ok=True, face=face, alignment=alignment, box=box, aligned_lq=aligned_lq,
                                        face_source=source))
            todo.append((len(results) - 1, job, face, alignment, aligned_lq, aligned_gt))
        if not todo:
            return results
        batch = RefFRBatch(
            lq=[t[4] for t in todo],
            references=[list(t[1].references) for t in todo],
            ground_truth=[t[5] for t in todo],
            identities=[t[1].identity for t in todo],
        )
        restored = self.ref_fr.restore(batch)
        if len(restored) != len(todo):
            raise BadInputError(f"Ref-FR '{self.ref_fr.name}' returned {len(restored)} crops for {len(todo)} faces")
        for (i, job, _face, alignment, _alq, _agt), hq in zip(todo, restored, strict=True):
            res = results[i]
            x0, y0, x1, y1 = res.box  # type: ignore[misc]
            local = crop_alignment(alignment, x0, y0)
            back = _warp_back(np.asarray(hq, dtype=np.uint8), local, (y1 - y0, x1 - x0), self.ref_fr.band_limited)
            res.aligned_hq = np.asarray(hq, dtype=np.uint8)
            res.x_hq = back
            res.x_lq = np.ascontiguousarray(np.asarray(job.lq)[y0:y1, x0:x1])
            if job.ground_truth is not None:
                res.x_gt = np.ascontiguousarray(np.asarray(job.ground_truth)[y0:y1, x0:x1])
        return results

    def describe(self) -> dict[str, Any]:
        """Backends and settings (recorded with pairs)."""
        return {
            "ref_fr": self.ref_fr.name,
            "detector": getattr(self.detector, "backend", None),
            "size": self.size,
            "min_face_px": self.min_face_px,
        }
