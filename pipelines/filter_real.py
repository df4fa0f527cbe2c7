"""`inscene filter-real`: the three-stage real-photo filter for gallery and CC12M images (§6.2, §4.1).

Provenance: Face2Scene (arXiv 2603.16570) §6.2 and Figure 6 (the three stages and their
thresholds), §4.1 "Real-world training data" (the CC12M variant: shorter side >= 1024, crop along the
longer dimension, the same three IQA thresholds).

Stages, in order (each row of the decision log names the first one that rejected it):

``decode``   read the bytes (file, URL, tar member), sha256, safe decode (bomb guard, EXIF
             orientation); every broken input is rejected here with its reason (a short code such
             as ``unreadable`` or ``truncated``, which the report groups by) and its detail in
             ``m.decode_detail`` (e.g. ``FileNotFoundError: ...`` or ``PermissionError: ...``).
``size``     Stage 1: shorter side >= 1000 px (gallery) or >= 1024 px (cc12m).
``faces``    Stage 1: resize so min(H, W) = 1024, detect faces (YOLO-face when its weights are found,
             the embedded dlib detector otherwise), keep one (largest by default) and crop a
             1024x1024 square along the longer dimension that holds its whole box, as close to
             centred on the face as the image allows (§4.1: "crop along the longer dimension rather
             than a center crop").
``content``  Stage 2: face box area >= 1% of the crop; variance of the Laplacian on the face region
             and on the whole crop, each above its threshold.
``quality``  Stage 3: MUSIQ >= 65, CLIP-IQA >= 0.65, MANIQA >= 0.40 (pyiqa, batched, on the GPU when
             there is one). Without those weights: the embedded, weight-free PIQE <= ``max_piqe``;
             every row (``m.iqa``), every sample and the report say which was used.
``encode``   the crop, re-encoded without any metadata (no EXIF, so no GPS), and its record.

Outputs in ``--out``: ``dataset/`` (WebDataset shards + parquet manifests, one shard per
partition), ``decisions/part-NNNNN.parquet`` (one row per input, every measured value),
``report.md``/``report.html`` with ``funnel.png`` and ``histograms.png``, ``run.json`` (settings,
backends, counts, and the working directory relative sources are relative to). Reruns of the same
command skip committed partitions.

Blur thresholds (Laplacian variance of the 8-bit gray image, OpenCV ``ksize=1``; the face region
first downscaled to at most 256 px). The paper names the measure but not its threshold. Measured by
:func:`measure_thresholds` on the two real photos installed packages ship, at their native scale (as
a ~1024 px photo reaches the crop) and blurred with a Gaussian of sigma px (face / whole image):

    copy        astronaut    t1.jpg (group)
    sharp       823 / 861    265 / 207
    sigma 1      92 / 66      45 / 32
    sigma 1.5    42 / 24      20 / 13
    sigma 2      24 / 12      11 / 7
    sigma 3      12 / 5        5 / 3
    bokeh: t1.jpg sharp only within 2x / 1x its face box, the rest at sigma 4: image 28 / 14

``min_blur_face = 35`` and ``min_blur_image = 20`` keep the sharp and sigma-1 copies, reject every
copy at sigma >= 2, and reject portraits whose sharp part covers under ~10% of the frame (the
"defocus blur in the background" of Figure 6). Noise raises the Laplacian variance (a known limit of
the measure); Stage 3 is there for it. Tune on your data with ``--rethreshold`` (no recomputation).

PIQE fallback (Stage 3 without the MUSIQ/CLIP-IQA/MANIQA weights): keep PIQE <= 50, PIQE's "fair"
limit. Measured: sharp 33.8 / 49.7, sigma 1: 75 / 78, JPEG q30: 56 / 58, presets d1 100 / 100 and d4
77 / 79 (rejected); the noise-dominated presets d2/d3 score 10-34 and pass, a PIQE blind spot. It is
a stand-in, never the paper's criterion, and is recorded as ``m.iqa = "piqe"`` on every row.

Rethreshold (``--rethreshold LOG``): decisions are re-made from the logged values with new
thresholds (no detection, no IQA). Accepted samples are copied from the first run's shards when
they are there, and re-made from their sources otherwise (decode, the logged resize and crop,
encode: byte-identical to what the first run would have written); relative sources are resolved
against the first run's working directory (``cwd`` in its ``run.json``), so this works from any
folder, and a source that cannot be read any more is one ``decode`` row ("rethreshold: <reason>",
detail in ``m.decode_detail``), never the end of the run. A row whose deciding value was
never measured (e.g. Stage 3 scores of an image Stage 2 rejected, unless the first run used
``--measure-all``) stays rejected with reason "not measured ...".
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inscene import imageio
from inscene.batches import PartitionOutput, run_batched
from inscene.config import InsceneConfig, RealFilterSettings
from inscene.errors import BadInputError, ImageDecodeError, MissingWeightsError
from inscene.outdir import prepare_out_dir
from inscene.schema import Face, Provenance, Sample
from inscene.stages import (
    Item,
    Rejection,
    RunSummary,
    decision_path,
    read_decisions,
    summarize,
    write_parquet_atomic,
)
from pipelines.inputs import InputRef, Pseudonymiser, list_inputs, read_input, read_sidecars, sanitize_key

Profile = Literal["gallery", "cc12m"]
PROFILES: tuple[str, ...] = ("gallery", "cc12m")
DEFAULT_SUBSET = {"gallery": "real", "cc12m": "nonref"}
PAPER_IQA = ("musiq", "clipiqa", "maniqa")
STAGE_OF = {"decode": "decode", "size": "stage 1", "faces": "stage 1", "content": "stage 2",
            "quality": "stage 3", "encode": "write"}
NOT_MEASURED = "not measured in the first run (rerun filter-real to decide)"
RUN_JSON = "run.json"
DATASET_DIR = "dataset"
DEFAULT_PARTITION_SIZE = 500


# ---- thresholds and the checks shared by the stages and --rethreshold -----------------------------


@dataclass(frozen=True)
class Thresholds:
    """Every threshold the filter applies; defaults from :class:`RealFilterSettings` (§6.2, §4.1)."""

    min_short_side: int
    min_face_area_fraction: float
    min_blur_face: float
    min_blur_image: float
    min_musiq: float
    min_clipiqa: float
    min_maniqa: float
    max_piqe: float

    @classmethod
    def for_profile(cls, profile: str, settings: RealFilterSettings | None = None, **overrides: Any) -> Thresholds:
        """The profile's thresholds, with any non-None ``overrides`` (field name -> value)."""
        if profile not in PROFILES:
            raise BadInputError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        s = settings or RealFilterSettings()
        base = cls(
            min_short_side=s.min_short_side_gallery if profile == "gallery" else s.min_short_side_cc12m,
            min_face_area_fraction=s.min_face_area_fraction,
            min_blur_face=s.min_blur_face,
            min_blur_image=s.min_blur_image,
            min_musiq=s.min_musiq,
            min_clipiqa=s.min_clipiqa,
            min_maniqa=s.min_maniqa,
            max_piqe=s.max_piqe,
        )
        return base.replace(**overrides)

    def replace(self, **overrides: Any) -> Thresholds:
        """A copy with the non-None ``overrides`` applied."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise BadInputError(f"unknown threshold(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _num(m: dict[str, Any], name: str) -> float | None:
    v = m.get(name)
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def check_size(m: dict[str, Any], t: Thresholds) -> str | None:
    """Stage 1 size check on ``m['short_side']``; the reason, or None when it passes."""
    short = _num(m, "short_side")
    if short is not None and short < t.min_short_side:
        return f"short side < {t.min_short_side}"
    return None


def check_content(m: dict[str, Any], t: Thresholds) -> str | None:
    """Stage 2: face area, then face blur, then image blur; the first failing reason or None."""
    area, face, image = _num(m, "face_area_fraction"), _num(m, "blur_face"), _num(m, "blur_image")
    if area is not None and area < t.min_face_area_fraction:
        return f"face area < {t.min_face_area_fraction:.2%}".replace(".00%", "%")
    if face is not None and face < t.min_blur_face:
        return f"blurry face (Laplacian variance < {t.min_blur_face:g})"
    if image is not None and image < t.min_blur_image:
        return f"blurry image (Laplacian variance < {t.min_blur_image:g})"
    return None


def check_quality(m: dict[str, Any], t: Thresholds) -> str | None:
    """Stage 3 with the IQA the row was scored with (``m['iqa']``: ``paper`` or ``piqe``)."""
    if m.get("iqa") == "piqe":
        v = _num(m, "piqe")
        if v is not None and v > t.max_piqe:
            return f"PIQE > {t.max_piqe:g} (embedded fallback)"
        return None
    for name, label, limit in (("musiq", "MUSIQ", t.min_musiq), ("clipiqa", "CLIP-IQA", t.min_clipiqa),
                               ("maniqa", "MANIQA", t.min_maniqa)):
        v = _num(m, name)
        if v is not None and v < limit:
            return f"{label} < {limit:g}"
    return None


# ---- image geometry --------------------------------------------------------------------------------


def resize_short_side(rgb: np.ndarray, side: int) -> np.ndarray:
    """Resize so that min(H, W) == ``side`` (area averaging down, bicubic up); same array if equal."""
    import cv2

    h, w = rgb.shape[:2]
    if min(h, w) == side:
        return rgb
    s = side / min(h, w)
    size = (side, max(side, round(h * s))) if w <= h else (max(side, round(w * s)), side)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def crop_start(length: int, crop: int, lo: float, hi: float) -> int | None:
    """Start of a ``crop``-long window in ``[0, length]`` that holds ``[lo, hi]``, centred on it
    as far as the image allows; None when the interval is longer than the window."""
    first = max(0, math.ceil(hi) - crop)
    last = min(length - crop, math.floor(lo))
    if first > last:
        return None
    return int(min(max(round((lo + hi) / 2 - crop / 2), first), last))


def select_face(faces: Sequence[Face], how: str) -> Face:
    """The face the crop is made around: ``largest`` box or best ``score``."""
    return max(faces, key=(lambda f: f.area) if how == "largest" else (lambda f: f.score))


def _shift(face: Face, dx: float, dy: float) -> Face:
    x1, y1, x2, y2 = face.box
    return Face(
        box=[x1 - dx, y1 - dy, x2 - dx, y2 - dy],
        landmarks=[[round(x - dx, 3), round(y - dy, 3)] for x, y in face.landmarks],
        score=face.score,
        backend=face.backend,
    )


def _inside(face: Face, size: int, tol: float = 0.5) -> bool:
    x1, y1, x2, y2 = face.box
    return x1 >= -tol and y1 >= -tol and x2 <= size + tol and y2 <= size + tol


# PIL transpose methods for EXIF orientations 2-8 (what ImageOps.exif_transpose does)
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
              7: "TRANSVERSE", 8: "ROTATE_90"}


def decode_for_crop(data: bytes, short_side: int, max_pixels: int, label: str = "<bytes>") -> tuple[np.ndarray, Any]:
    """Decode an image for a crop whose shorter side is ``short_side``; returns (RGB, header info).

    The header is read first by :func:`inscene.imageio.probe_image` (bomb guard, format allow-list,
    EXIF orientation). A baseline RGB or gray JPEG at least twice as large as needed is decoded by
    libjpeg's DCT scaling at 1/2, 1/4 or 1/8 (the largest that keeps the shorter side >= ``short_side``):
    2-3x faster on 12 MP photos, and 51 dB PSNR from a full decode after the resize to the crop's scale.
    Everything else goes through :func:`inscene.imageio.decode_image` unchanged.

    Raises:
        ImageDecodeError: as :func:`inscene.imageio.decode_image`.
    """
    from PIL import Image

    info = imageio.probe_image(data, max_pixels=max_pixels)
    short = min(info.width, info.height)
    k = next((f for f in (8, 4, 2) if short // f >= short_side), 1)
    if k == 1 or info.format not in ("JPEG", "MPO") or info.mode not in ("RGB", "L"):
        return imageio.decode_image(data, max_pixels=max_pixels), info
    factory = Image.OPEN["JPEG"][0]  # the plugin directly: no global pixel limit (checked above)
    try:
        with factory(io.BytesIO(data), "") as im:
            im.draft(im.mode, (im.width // k, im.height // k))
            im.load()
            if info.orientation in _TRANSPOSE:
                im = im.transpose(getattr(Image.Transpose, _TRANSPOSE[info.orientation]))
            rgb = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
    except (OSError, ValueError, SyntaxError) as exc:  # broken scan data after a good header
        raise ImageDecodeError("truncated", label, f"{type(exc).__name__}: {exc}") from exc
    if min(rgb.shape[:2]) < short_side:  # never expected: the decoder rounds sizes up
        return imageio.decode_image(data, max_pixels=max_pixels), info
    return np.ascontiguousarray(rgb), info


# ---- stages ------------------------------------------------------------------------------------------


@dataclass
class DecodeStage:
    """Read the original bytes (file, URL, tar member), hash them, decode safely to RGB uint8."""

    max_pixels: int = imageio.DEFAULT_MAX_PIXELS
    crop: int | None = None
    name: str = "decode"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing heavy to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        ref: InputRef = item.data["ref"]
        try:
            data = read_input(ref)
            item.measured["sha256"] = imageio.sha256_bytes(data)
            item.measured["file_bytes"] = len(data)
            if self.crop is None:
                rgb = imageio.decode_image(data, max_pixels=self.max_pixels)
                h, w = rgb.shape[:2]
            else:
                rgb, info = decode_for_crop(data, self.crop, self.max_pixels, ref.source)
                h, w = info.height, info.width
        except ImageDecodeError as exc:  # the short reason groups the funnel; the detail says what happened
            detail = _safe_detail(exc.detail, ref.label)
            return Rejection(self.name, exc.reason, {"decode_detail": detail} if detail else {})
        del data
        item.measured["height"], item.measured["width"] = int(h), int(w)
        item.backends["decoder"] = _decoder_name()
        item.data["rgb"] = rgb
        if ref.sidecars:
            side = read_sidecars(ref)
            item.meta["caption"] = side.get("caption", "")
            url = side.get("json", {}).get("url")
            item.meta["url"] = url if isinstance(url, str) else ""
        return item


def _safe_detail(detail: str, label: str) -> str:
    """What the decision log keeps of a decode failure's detail (``m.decode_detail``).

    The detail as is (``FileNotFoundError: [Errno 2] ...``, ``member ends after ...``), except for
    pseudonymised inputs (``label`` a pseudonym): an OS error there names the path, so only its
    exception type is kept.
    """
    if not label.startswith("pseudonymised:"):
        return detail
    head = detail.split(":", 1)[0]
    return head if head.isidentifier() else detail


def _decoder_name() -> str:
    import PIL

    return f"inscene.imageio/pillow-{PIL.__version__}"


@dataclass
class SizeStage:
    """Stage 1, size: reject images whose shorter side is below the profile's minimum."""

    min_short_side: int
    name: str = "size"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing heavy to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        item.measured["short_side"] = short = int(min(item.measured["height"], item.measured["width"]))
        if short < self.min_short_side:
            reason = f"short side < {self.min_short_side}"  # the same wording as check_size
            item.data.clear()
            return Rejection(self.name, reason)
        return item


@dataclass
class FaceCropStage:
    """Stage 1, faces: resize to min(H, W) = crop, detect, keep one face, crop a square holding it.

    Args:
        detector: registry name (``dlib``, ``yolo-face``, ``insightface``).
        crop: output side (1024, §6.2).
        detect_short_side: shorter side of the detection copy.
        dlib_upsample: dlib's upsampling (dlib only).
        face_select: ``largest`` or ``score``.
        detector_path: explicit weights (YOLO ``.pt`` or insightface pack folder).
    """

    detector: str = "dlib"
    crop: int = 1024
    detect_short_side: int = 704
    dlib_upsample: int = 0
    face_select: str = "largest"
    detector_path: str | None = None
    name: str = "faces"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Create and load the detector once per worker (its models are cached per process)."""
        self._det = make_detector(self.detector, self.detect_short_side, self.dlib_upsample, self.detector_path)
        self._det.load()

    def __call__(self, item: Item) -> Item | Rejection:
        rgb = resize_short_side(item.data.pop("rgb"), self.crop)
        h, w = rgb.shape[:2]
        item.measured["resized_width"], item.measured["resized_height"] = int(w), int(h)
        det = getattr(self, "_det", None)
        if det is None:
            self.setup()
            det = self._det
        faces = det.detect(rgb)
        item.backends["detector"] = det.backend
        item.measured["n_faces"] = len(faces)
        if not faces:
            return Rejection(self.name, "no face")
        face = select_face(faces, self.face_select)
        x0 = crop_start(w, self.crop, face.box[0], face.box[2])
        y0 = crop_start(h, self.crop, face.box[1], face.box[3])
        item.measured["face_score"] = float(face.score)
        item.measured["face_box_resized"] = json.dumps([round(v, 2) for v in face.box])
        if x0 is None or y0 is None:
            return Rejection(self.name, "face box does not fit a square crop")
        item.measured["crop_x0"], item.measured["crop_y0"] = x0, y0
        crop = np.ascontiguousarray(rgb[y0 : y0 + self.crop, x0 : x0 + self.crop])
        del rgb
        chosen = _shift(face, x0, y0)
        others = [_shift(f, x0, y0) for f in faces if f is not face]
        kept = [chosen] + [f for f in others if _inside(f, self.crop)]
        item.measured["faces"] = json.dumps([f.model_dump(mode="json", exclude={"landmarks68"}) for f in kept])
        item.measured["face_box"] = json.dumps([round(v, 2) for v in chosen.box])
        item.data["crop"] = crop
        item.data["face"] = chosen
        return item


def make_detector(name: str, detect_short_side: int, dlib_upsample: int, path: str | None = None) -> Any:
    """The Stage 1 detector: detection copy with shorter side ``detect_short_side``."""
    from inscene.faces import create_detector

    opts: dict[str, Any] = {"max_side": detect_short_side, "min_short_side": detect_short_side, "select": "all"}
    if name == "dlib":
        opts["upsample"] = dlib_upsample
    elif path is not None:
        opts["path"] = path
    return create_detector(name, **opts)


@dataclass
class ContentStage:
    """Stage 2: face area fraction and Laplacian-variance blur on the face and on the whole crop.

    All three values are measured before deciding, so ``--rethreshold`` can re-decide any of them.
    With ``measure_all`` a rejection is deferred to after Stage 3, which then still scores the crop.
    """

    thresholds: Thresholds
    blur_face_side: int = 256
    measure_all: bool = False
    name: str = "content"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Build the (embedded, weight-free) Laplacian scorers."""
        from inscene.quality import create_scorer

        self._face_blur = create_scorer("laplacian", max_side=self.blur_face_side)
        self._image_blur = create_scorer("laplacian")

    def __call__(self, item: Item) -> Item | Rejection:
        if not hasattr(self, "_face_blur"):
            self.setup()
        crop, face = item.data["crop"], item.data.pop("face")
        m = item.measured
        m["face_area_fraction"] = float(face.area) / float(crop.shape[0] * crop.shape[1])
        m["face_area_fraction_orig"] = float(face.area) / float(
            m["resized_width"] * m["resized_height"]
        )
        m["blur_face"] = self._face_blur.score_array(crop, face.box)
        m["blur_image"] = self._image_blur.score_array(crop)
        item.backends["blur"] = self._image_blur.version
        item.backends["blur_face"] = self._face_blur.version
        reason = check_content(m, self.thresholds)
        if reason:
            if self.measure_all:
                item.data["deferred"] = Rejection(self.name, reason)
                return item
            item.data.clear()
            return Rejection(self.name, reason)
        return item


@dataclass
class QualityStage:
    """Stage 3: no-reference IQA, batched (MUSIQ, CLIP-IQA, MANIQA; or the embedded PIQE fallback)."""

    thresholds: Thresholds
    mode: Literal["paper", "piqe"] = "piqe"
    device: str | None = None
    batch_size: int = 8
    name: str = "quality"
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        return PAPER_IQA if self.mode == "paper" else ("piqe",)

    def setup(self) -> None:
        """Create and load the IQA models once per worker (pyiqa; weights located offline)."""
        from inscene.quality import create_scorer

        self._scorers = {n: create_scorer(n, device=self.device, batch_size=self.batch_size) for n in self.metrics}
        for s in self._scorers.values():
            s.load()

    def call_batch(self, items: list[Item]) -> list[Item | Rejection]:
        """Score a batch of crops and decide each."""
        if not hasattr(self, "_scorers"):
            self.setup()
        crops = [it.data["crop"] for it in items]
        scores = {n: s.score(crops) for n, s in self._scorers.items()}
        out: list[Item | Rejection] = []
        for i, item in enumerate(items):
            item.measured["iqa"] = self.mode
            for n, scorer in self._scorers.items():
                item.measured[n] = float(scores[n][i])
                item.backends[n] = scorer.version
            deferred = item.data.pop("deferred", None)
            reason = check_quality(item.measured, self.thresholds)
            if deferred is not None:
                item.data.clear()
                out.append(deferred)
            elif reason:
                item.data.clear()
                out.append(Rejection(self.name, reason))
            else:
                out.append(item)
        return out

    def __call__(self, item: Item) -> Item | Rejection:
        return self.call_batch([item])[0]


_SCORE_COLUMNS = ("short_side", "face_area_fraction", "blur_face", "blur_image")


@dataclass
class EncodeStage:
    """Encode the crop without metadata and build its record (``Sample`` + filter columns)."""

    split: str = "train"
    subset: str = "real"
    profile: str = "gallery"
    fmt: str = "png"
    quality: int = 95
    iqa_metrics: tuple[str, ...] = ("piqe",)
    name: str = "encode"
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def field(self) -> str:
        return "jpg" if self.fmt in ("jpeg", "jpg") else self.fmt

    def setup(self) -> None:
        """Nothing heavy to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        crop = item.data.pop("crop")
        item.data.clear()
        item.data["image"] = imageio.encode_image(crop, self.fmt, quality=self.quality)
        item.meta = self.meta(item.key, item.source, item.measured, item.backends, item.meta, crop.shape)
        return item

    def meta(
        self, key: str, source: str, m: dict[str, Any], backends: dict[str, str], extra: dict[str, Any],
        shape: Sequence[int],
    ) -> dict[str, Any]:
        """The flat shard metadata of one accepted crop (also used to rebuild it on --rethreshold)."""
        faces = [Face.model_validate(f) for f in json.loads(m["faces"])]
        sample = Sample(
            key=key,
            split=self.split,
            subset=self.subset,
            width=int(shape[1]),
            height=int(shape[0]),
            identity_id=m.get("identity_id") or None,
            faces=faces,
            provenance=Provenance(source=source, sha256=m["sha256"], backends=dict(backends)),
        )
        meta: dict[str, Any] = sample.to_meta()
        # the selected face first (to_meta's face_box is the largest one, the same with the default)
        meta["face_box"] = json.dumps(faces[0].box)
        meta["face_landmarks"] = json.dumps(faces[0].landmarks)
        meta["filter_profile"] = self.profile
        meta["orig_width"], meta["orig_height"] = int(m["width"]), int(m["height"])
        meta["crop_box"] = json.dumps([int(m["crop_x0"]), int(m["crop_y0"]),
                                       int(m["crop_x0"]) + int(shape[1]), int(m["crop_y0"]) + int(shape[0])])
        for col in _SCORE_COLUMNS:
            meta[col] = float(m[col]) if col != "short_side" else int(m[col])
        meta["iqa"] = str(m.get("iqa", ""))
        for name in self.iqa_metrics:
            meta[name] = float(m[name])
        meta["caption"] = str(extra.get("caption", "") or "")
        meta["url"] = str(extra.get("url", "") or "")
        return meta


# ---- sink --------------------------------------------------------------------------------------------


def _shard_files(root: Path, split: str, subset: str, partition: int) -> list[Path]:
    stem = root / split / f"{subset}-{partition:05d}"
    return [stem.with_suffix(".tar"), stem.with_suffix(".tar.tmp"), stem.with_suffix(".parquet"),
            stem.with_suffix(".tar.json")]


class _ShardPartition:
    def __init__(self, sink: ShardSink, partition: int) -> None:
        from inscene.shards import ShardWriter

        self.field = sink.field
        self.writer = ShardWriter(sink.root, sink.split, sink.subset, start_shard=partition,
                                  max_count=10**9, max_bytes=2**62, overwrite=True)

    def write(self, item: Item) -> None:
        self.writer.write(item.key, {self.field: item.data["image"]}, item.meta)

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


@dataclass
class ShardSink:
    """One shard per partition (``{subset}-{partition:05d}.tar``), written as items are accepted."""

    root: str
    split: str
    subset: str
    field: str = "png"

    def clear(self, partition: int) -> None:
        """Remove what an interrupted attempt left of this partition's shard."""
        for path in _shard_files(Path(self.root), self.split, self.subset, partition):
            path.unlink(missing_ok=True)

    def open(self, partition: int) -> _ShardPartition:
        """A writer for this partition's shard."""
        return _ShardPartition(self, partition)


# ---- options and run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterOptions:
    """How filter-real runs (recorded in ``run.json``; thresholds in :attr:`thresholds`)."""

    profile: str = "gallery"
    thresholds: Thresholds | None = None
    split: str = "train"
    subset: str | None = None
    detector: str = "auto"
    detector_path: str | None = None
    iqa: Literal["auto", "paper", "piqe"] = "auto"
    device: str | None = None
    image_format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = 95
    partition_size: int = DEFAULT_PARTITION_SIZE
    batch_size: int = 8
    measure_all: bool = False
    pseudonymise: bool = False
    face_select: str | None = None

    def resolved(self, settings: RealFilterSettings) -> FilterOptions:
        """Defaults filled in from the profile and settings; checked."""
        if self.profile not in PROFILES:
            raise BadInputError(f"--profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.iqa not in ("auto", "paper", "piqe"):
            raise BadInputError(f"--iqa must be auto, paper or piqe, got {self.iqa!r}")
        if self.image_format not in ("png", "jpeg"):
            raise BadInputError(f"--image-format must be png or jpeg, got {self.image_format!r}")
        if self.partition_size < 1 or self.batch_size < 1:
            raise BadInputError("--partition-size and --batch-size must be >= 1")
        face_select = self.face_select or settings.face_select
        if face_select not in ("largest", "score"):
            raise BadInputError(f"--face must be 'largest' or 'score', got {face_select!r}")
        return dataclasses.replace(
            self,
            thresholds=self.thresholds or Thresholds.for_profile(self.profile, settings),
            subset=self.subset or DEFAULT_SUBSET[self.profile],
            face_select=face_select,
        )

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return d


def resolve_detector(name: str) -> str:
    """``auto``: YOLO-face (the paper's, §6.2) when its weights are found, else the embedded dlib."""
    from inscene.faces import list_detectors

    if name == "auto":
        from inscene import weights

        try:
            weights.locate(InsceneConfig().faces.yolo_weights)
            return "yolo-face"
        except MissingWeightsError:
            return "dlib"
    if name not in list_detectors():
        raise BadInputError(f"unknown detector {name!r}; known: auto, {', '.join(list_detectors())}")
    return name


def resolve_iqa(mode: str, device: str | None = None) -> str:
    """``auto``: the paper's three metrics when all their weights are found, else ``piqe``.

    Raises:
        MissingWeightsError: ``paper`` asked for and a weight file is missing (names the file).
    """
    from inscene.quality import create_scorer

    if mode == "piqe":
        return "piqe"
    try:
        for name in PAPER_IQA:
            create_scorer(name, device=device)  # locates the weights; loads nothing
    except MissingWeightsError:
        if mode == "paper":
            raise
        return "piqe"
    return "paper"


def build_stages(options: FilterOptions, settings: RealFilterSettings, detector: str, iqa: str,
                 max_pixels: int) -> list[Any]:
    """The six stages of a run, configured."""
    t = options.thresholds
    assert t is not None and options.subset is not None
    # the paper's IQA wants a GPU worker; the runner asks for one only where a worker offers it
    gpu = {"GPU": 1.0} if iqa == "paper" and (options.device is None or options.device.startswith("cuda")) else {}
    return [
        DecodeStage(max_pixels=max_pixels, crop=settings.crop_size),
        SizeStage(min_short_side=t.min_short_side),
        FaceCropStage(detector=detector, crop=settings.crop_size, detect_short_side=settings.detect_short_side,
                      dlib_upsample=settings.dlib_upsample, face_select=options.face_select or "largest",
                      detector_path=options.detector_path),
        ContentStage(thresholds=t, blur_face_side=settings.blur_face_side, measure_all=options.measure_all),
        QualityStage(thresholds=t, mode=iqa, device=options.device, batch_size=options.batch_size, resources=gpu),
        EncodeStage(split=options.split, subset=options.subset, profile=options.profile,
                    fmt=options.image_format, quality=options.jpeg_quality,
                    iqa_metrics=PAPER_IQA if iqa == "paper" else ("piqe",)),
    ]


@dataclass
class FilterResult:
    """What a filter-real run produced."""

    out: Path
    summary: RunSummary
    funnel: dict[str, int]
    report: dict[str, Path]
    detector: str
    iqa: str
    seconds: float
    refs: RunSummary | None = None

    @property
    def ok(self) -> bool:
        """True when no item failed with an unexpected error (rejections are fine)."""
        return self.summary.errors == 0 and (self.refs is None or self.refs.errors == 0)


def _items(refs: Sequence[InputRef], pseudonymiser: Pseudonymiser | None) -> list[Item]:
    items = []
    for r in refs:
        if r.identity is None:
            ident = None
        elif pseudonymiser is not None:
            ident = pseudonymiser.identity(r.identity)
        else:
            ident = sanitize_key(r.identity)
        ref = dataclasses.replace(r, identity=None)  # raw names never travel further than the listing
        measured = {"identity_id": ident} if ident else {}
        items.append(Item(key=r.key, source=r.label, data={"ref": ref}, measured=measured))
    return items


def _fingerprint(refs: Sequence[InputRef], options: FilterOptions, detector: str, iqa: str,
                 settings: RealFilterSettings) -> str:
    h = hashlib.sha256()
    for r in refs:
        h.update(f"{r.key}\t{r.source}\n".encode())
    h.update(json.dumps([options.to_json(), detector, iqa, settings.model_dump(mode="json")],
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def _check_resume(out: Path, fingerprint: str, salt_fp: str | None) -> None:
    path = out / RUN_JSON
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return
    if old.get("salt_fingerprint") != salt_fp:
        raise BadInputError(f"{out} holds a run made with a different pseudonymisation salt (or none); "
                            "use the same salt or another --out")
    if old.get("fingerprint") != fingerprint:
        raise BadInputError(f"{out} holds a filter-real run with other inputs or settings; rerun exactly "
                            "that command to resume it, or use another --out")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _make_client(cluster: Any) -> Any:
    if cluster is None:
        return None
    from inscene.runtime import make_client

    return make_client(cluster)


def run_filter_real(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    options: FilterOptions | None = None,
    *,
    refs: str | os.PathLike[str] | None = None,
    salt: bytes | None = None,
    cluster: Any = None,
    config: InsceneConfig | None = None,
    console: Any = None,
) -> FilterResult:
    """Filter real photos into 1024x1024 shards with a decision log and a funnel report.

    Args:
        inputs: folders, globs, URLs, list files, tars (see :mod:`pipelines.inputs`).
        out: output folder (created); rerunning the same command into it resumes.
        options: how to run (profile, thresholds, backends, partitioning).
        refs: gallery reference images, ``ROOT/<identity>/*.jpg``, written once to the
            ``refs`` subset for the identities the inputs show (the inputs must then be in the
            gallery layout ``INPUT/<identity>/*.jpg``; identities without references are counted
            in one warning).
        salt: the pseudonymisation secret (required with ``options.pseudonymise``).
        cluster: a ``ClusterOptions`` for Dask; None runs in this process.
        config: settings (default: the paper's, :class:`InsceneConfig`).
        console: rich console for messages (default: stderr).

    Returns:
        A :class:`FilterResult`.
    """
    from rich.console import Console

    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    config = config or InsceneConfig()
    settings = config.real_filter
    options = (options or FilterOptions()).resolved(settings)
    out = Path(out)
    pseudonymiser = None
    if options.pseudonymise:
        if salt is None:
            raise BadInputError("--pseudonymise needs a salt (--salt-file or $INSCENE_PSEUDONYM_SALT)")
        pseudonymiser = Pseudonymiser(salt)
    listed = list_inputs(inputs, identity_from="folder" if options.profile == "gallery" else "none",
                         pseudonymiser=pseudonymiser)
    ref_items = _ref_items(refs, listed, options, pseudonymiser, console) if refs is not None else None
    detector = resolve_detector(options.detector)
    iqa = resolve_iqa(options.iqa, options.device)
    fingerprint = _fingerprint(listed, options, detector, iqa, settings)
    prepare_out_dir(out)
    _check_resume(out, fingerprint, pseudonymiser.fingerprint if pseudonymiser else None)
    run_doc: dict[str, Any] = {
        "command": "filter-real",
        "fingerprint": fingerprint,
        "salt_fingerprint": pseudonymiser.fingerprint if pseudonymiser else None,
        "options": options.to_json(),
        "detector": detector,
        "iqa": iqa,
        "iqa_is_paper": iqa == "paper",
        "config": config.flat(),
        "inputs": [os.fspath(i) if not options.pseudonymise else "<pseudonymised>" for i in inputs],
        # relative sources in the log are relative to this folder (--rethreshold from elsewhere needs it)
        "cwd": None if options.pseudonymise else os.getcwd(),
        "n_inputs": len(listed),
    }
    _write_json(out / RUN_JSON, run_doc)
    if iqa != "paper":
        console.print(f"filter-real: Stage 3 uses the embedded PIQE <= {options.thresholds.max_piqe:g} "
                      "(MUSIQ/CLIP-IQA/MANIQA weights not found: see `inscene weights status`)",
                      markup=False, highlight=False)
    stages = build_stages(options, settings, detector, iqa, config.imageio.max_pixels)
    encode = stages[-1]
    sink = ShardSink(str(out / DATASET_DIR), options.split, options.subset, encode.field)
    items = _items(listed, pseudonymiser)
    identities = _identity_ids(items)
    del listed
    client = _make_client(cluster)
    try:
        summary = run_batched(stages, items, out, sink, partition_size=options.partition_size, client=client,
                              description="filter-real", console=console)
        ref_summary = None
        if ref_items is not None:
            ref_summary = _run_refs(ref_items, out, options, detector, identities, pseudonymiser is not None,
                                    client, config.imageio.max_pixels, console)
    finally:
        if client is not None:
            from inscene.runtime import close_client

            close_client(client)
    from inscene.shards import write_index

    if (out / DATASET_DIR).exists():
        write_index(out / DATASET_DIR)
    from pipelines.report import funnel_counts, write_report

    thresholds = dataclasses.asdict(options.thresholds)
    report = write_report(out, summary.decisions, thresholds=thresholds, iqa=iqa, detector=detector,
                          title=f"filter-real ({options.profile})")
    funnel = funnel_counts(summary.decisions)
    run_doc.update(funnel=funnel, accepted=summary.accepted, rejected=summary.rejected, errors=summary.errors,
                   by_reason=summary.by_reason, seconds=round(time.perf_counter() - t0, 2))
    if ref_summary is not None:
        run_doc["refs"] = {"accepted": ref_summary.accepted, "rejected": ref_summary.rejected,
                           "errors": ref_summary.errors}
    _write_json(out / RUN_JSON, run_doc)
    return FilterResult(out, summary, funnel, report, detector, iqa, time.perf_counter() - t0, ref_summary)


# ---- identity references -------------------------------------------------------------------------------


@dataclass
class RefFaceStage:
    """A reference image must show a face (detected on the image as it is; nothing is cropped)."""

    detector: str = "dlib"
    detector_path: str | None = None
    name: str = "faces"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Load the detector once per worker."""
        from inscene.faces import create_detector

        opts = {"path": self.detector_path} if self.detector_path and self.detector != "dlib" else {}
        self._det = create_detector(self.detector, **opts)
        self._det.load()

    def __call__(self, item: Item) -> Item | Rejection:
        if not hasattr(self, "_det"):
            self.setup()
        rgb = item.data["rgb"]
        faces = self._det.detect(rgb)
        item.backends["detector"] = self._det.backend
        item.measured["n_faces"] = len(faces)
        if not faces:
            item.data.clear()
            return Rejection(self.name, "no face")
        item.measured["faces"] = json.dumps(
            [f.model_dump(mode="json", exclude={"landmarks68"}) for f in sorted(faces, key=lambda f: -f.area)]
        )
        return item


@dataclass
class RefEncodeStage:
    """A reference image, re-encoded losslessly without metadata, with its identity."""

    split: str = "train"
    subset: str = "refs"
    name: str = "encode"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing heavy to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        rgb = item.data.pop("rgb")
        item.data.clear()
        item.data["image"] = imageio.encode_image(rgb, "png")
        m = item.measured
        sample = Sample(
            key=item.key, split=self.split, subset=self.subset, width=int(rgb.shape[1]), height=int(rgb.shape[0]),
            identity_id=m.get("identity_id") or None,
            faces=[Face.model_validate(f) for f in json.loads(m["faces"])],
            provenance=Provenance(source=item.source, sha256=m["sha256"], backends=dict(item.backends)),
        )
        item.meta = sample.to_meta()
        return item


def _identity_ids(items: Sequence[Item]) -> set[str]:
    return {it.measured["identity_id"] for it in items if it.measured.get("identity_id")}


def _ref_items(refs_root: str | os.PathLike[str], listed: Sequence[InputRef], options: FilterOptions,
               pseudonymiser: Pseudonymiser | None, console: Any) -> list[Item]:
    """List the references (``REFS/<identity>/*.jpg``) before any work and check they can match.

    Raises:
        BadInputError: the inputs show no identity (not the gallery layout ``INPUT/<identity>/*.jpg``,
            or a profile that reads no identities), so no reference could ever be matched.
    """
    wanted = _identity_ids(_items(listed, pseudonymiser))
    if not wanted:
        why = (f"--profile {options.profile} reads no identities (use --profile gallery)"
               if options.profile != "gallery" else
               "the inputs are not in the gallery layout INPUT/<identity>/*.jpg (one folder per identity)")
        raise BadInputError(f"--refs matches references REFS/<identity>/*.jpg to the identities of the inputs, "
                            f"but {why}")
    items = _items(list_inputs([refs_root], identity_from="folder", pseudonymiser=pseudonymiser), pseudonymiser)
    missing = len(wanted - _identity_ids(items))
    if missing:
        console.print(f"filter-real: warning: {missing} of {len(wanted)} identities of the inputs have no "
                      "folder of references REFS/<identity>/; their samples get no references",
                      markup=False, highlight=False, soft_wrap=True)
    return items


def _run_refs(ref_items: list[Item], out: Path, options: FilterOptions, detector: str, identities: set[str],
              pseudonymised: bool, client: Any, max_pixels: int, console: Any) -> RunSummary:
    """Write the reference images of the identities the inputs show, once, to the ``refs`` subset."""
    items = [it for it in ref_items if it.measured.get("identity_id") in identities]
    for it in items:  # keys of references never collide with the photos' keys
        it.key = f"ref-{it.key}"
    stages = [DecodeStage(max_pixels=max_pixels), RefFaceStage(detector, options.detector_path),
              RefEncodeStage(split=options.split, subset="refs")]
    sink = ShardSink(str(out / DATASET_DIR), options.split, "refs", "png")
    summary = run_batched(stages, items, out / "refs", sink, partition_size=options.partition_size, client=client,
                          description="filter-real refs", console=console)
    accepted = summary.decisions[summary.decisions["accepted"].astype(bool)]
    by_identity: dict[str, list[str]] = {}
    for key, ident in zip(accepted["key"], accepted.get("m.identity_id", []), strict=False):
        if isinstance(ident, str) and ident:
            by_identity.setdefault(ident, []).append(key)
    from inscene.schema import Identity

    records = [
        Identity(identity_id=i, pseudonymised=pseudonymised, references=sorted(keys),
                 split=options.split).model_dump(mode="json")
        for i, keys in sorted(by_identity.items())
    ]
    _write_json(out / DATASET_DIR / "identities.json", {"identities": records})
    return summary


# ---- rethreshold ------------------------------------------------------------------------------------


def run_dir_of(log: str | os.PathLike[str]) -> Path:
    """The first run's folder from a decision log path (a part file, the decisions folder, or the run)."""
    p = Path(log)
    if p.is_file():
        p = p.parent
    if p.name == "decisions":
        p = p.parent
    if not (p / "decisions").is_dir():
        raise BadInputError(f"no decision log found at {log} (expected OUT/decisions/part-*.parquet)")
    return p


def _measured(row: Any) -> dict[str, Any]:
    """The logged ``m.*`` values of one row, without the empty ones (NaN/None)."""
    out = {}
    for k, v in row.items():
        if k.startswith("m.") and v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[k[2:]] = v
    return out


def redecide(decisions: Any, thresholds: Thresholds) -> Any:
    """Re-make every decision from the logged values with new thresholds.

    Errors, decode failures and Stage 1 face rejections stay as they were (no threshold decides
    them). A row whose deciding values were never measured gets reason :data:`NOT_MEASURED`.

    Returns:
        A copy of ``decisions`` with new ``accepted``/``stage``/``reason`` and the old ones as
        ``prev_accepted``/``prev_stage``/``prev_reason``.
    """
    df = decisions.copy()
    df["prev_accepted"], df["prev_stage"], df["prev_reason"] = df["accepted"], df["stage"], df["reason"]
    new = []
    for row in df.to_dict("records"):
        m = _measured(row)
        old = (bool(row["accepted"]), row["stage"], row["reason"])
        if bool(row.get("error", False)) or (not old[0] and old[1] in ("decode", "faces", "encode")):
            new.append(old)
            continue
        if (r := check_size(m, thresholds)) is not None:
            new.append((False, "size", r))
            continue
        if _num(m, "face_area_fraction") is None:
            new.append((False, "faces", NOT_MEASURED))
            continue
        if (r := check_content(m, thresholds)) is not None:
            new.append((False, "content", r))
            continue
        if not isinstance(m.get("iqa"), str):
            new.append((False, "quality", NOT_MEASURED))
            continue
        if (r := check_quality(m, thresholds)) is not None:
            new.append((False, "quality", r))
            continue
        new.append((True, "encode", ""))
    df["accepted"] = [a for a, _, _ in new]
    df["stage"] = [s for _, s, _ in new]
    df["reason"] = [r for _, _, r in new]
    return df


def _old_shard_members(run: Path, split: str, subset: str, partition: int, field_name: str) -> dict[str, tuple]:
    """key -> (image bytes, meta) of one partition's shard of the first run ({} if none)."""
    import tarfile

    path = run / DATASET_DIR / split / f"{subset}-{partition:05d}.tar"
    if not path.exists():
        return {}
    images: dict[str, bytes] = {}
    metas: dict[str, dict] = {}
    with tarfile.open(path, "r:") as tf:
        for m in tf:
            if not m.isfile():
                continue
            key, _, fld = m.name.partition(".")
            data = tf.extractfile(m).read()
            if fld == field_name:
                images[key] = data
            elif fld == "json":
                metas[key] = json.loads(data)
    return {k: (images[k], metas[k]) for k in images if k in metas}


def resolve_source(source: str, cwd: str | None) -> str:
    """A logged local path made usable from any working directory: a relative one is joined to
    ``cwd`` (the first run's, from its ``run.json``); URLs, absolute paths and runs that recorded
    no ``cwd`` (older or pseudonymised ones) keep the path as logged."""
    if cwd is None or "://" in source or os.path.isabs(source):
        return source
    return os.path.join(cwd, source)


def _ref_from_source(source: str, cache: dict[str, list[InputRef] | str], cwd: str | None = None) -> InputRef:
    """An InputRef for a logged source (a file, URL or ``<tar>#<member>``), relative paths resolved
    against the first run's working directory ``cwd``.

    Raises:
        ImageDecodeError: ``unreadable`` for a tar that cannot be listed (once per tar: ``cache``
            keeps the message) or a member that is not in it.
    """
    if "#" in source and source.split("#", 1)[0].lower().endswith(".tar"):
        tar, member = source.split("#", 1)
        if tar not in cache:
            try:
                cache[tar] = list_inputs([resolve_source(tar, cwd)], identity_from="none")
            except BadInputError as exc:
                cache[tar] = str(exc)
        listed = cache[tar]
        if isinstance(listed, str):
            raise ImageDecodeError("unreadable", source, listed)
        for r in listed:
            if r.source.split("#", 1)[1] == member:
                return r
        raise ImageDecodeError("unreadable", source, "member not found in its tar")
    return InputRef(key="", source=resolve_source(source, cwd), label=source)


def replay(ref: InputRef, m: dict[str, Any], crop: int, max_pixels: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Re-make a crop from its source with the logged geometry (no detection, no IQA).

    Raises:
        ImageDecodeError: unreadable source, or bytes that changed since the first run.
    """
    data = read_input(ref)
    if imageio.sha256_bytes(data) != m.get("sha256"):
        raise ImageDecodeError("changed", ref.source, "sha256 differs from the first run's")
    rgb = resize_short_side(decode_for_crop(data, crop, max_pixels, ref.source)[0], crop)
    x0, y0 = int(m["crop_x0"]), int(m["crop_y0"])
    extra: dict[str, Any] = {}
    if ref.sidecars:
        side = read_sidecars(ref)
        extra["caption"] = side.get("caption", "")
        url = side.get("json", {}).get("url")
        extra["url"] = url if isinstance(url, str) else ""
    return np.ascontiguousarray(rgb[y0 : y0 + crop, x0 : x0 + crop]), extra


def _copy_refs(run: Path, out: Path, split: str) -> int:
    """Identity references do not depend on thresholds: copy the first run's as they are."""
    src = run / DATASET_DIR / split
    files = sorted(src.glob("refs-*")) if src.is_dir() else []
    for f in files:
        if f.name.endswith((".tar", ".parquet", ".tar.json")):
            dst = out / DATASET_DIR / split / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
    ids = run / DATASET_DIR / "identities.json"
    if ids.exists():
        shutil.copy2(ids, out / DATASET_DIR / "identities.json")
    return sum(1 for f in files if f.name.endswith(".tar"))


def run_rethreshold(
    log: str | os.PathLike[str],
    out: str | os.PathLike[str],
    overrides: dict[str, Any] | None = None,
    *,
    inputs: Sequence[str | os.PathLike[str]] | None = None,
    salt: bytes | None = None,
    console: Any = None,
) -> FilterResult:
    """Re-apply thresholds to a first run's decision log and write the newly accepted set.

    Args:
        log: the first run's decision log (its folder, ``decisions/``, or one part file).
        out: new output folder (must differ from the first run's).
        overrides: threshold field -> new value (None values keep the first run's).
        inputs: the first run's inputs, needed only to re-make samples absent from its shards
            when the first run was pseudonymised (its log records no paths).
        salt: the first run's salt (with ``inputs`` of a pseudonymised run).
        console: rich console for messages.

    Returns:
        A :class:`FilterResult` for the new folder.
    """
    from rich.console import Console

    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    run = run_dir_of(log)
    out = Path(out)
    if out.resolve() == run.resolve():
        raise BadInputError("--rethreshold writes a new run: give an --out other than the first run's folder")
    try:
        first = json.loads((run / RUN_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{run / RUN_JSON} is missing or unreadable: {exc}") from exc
    opts = dict(first["options"])
    old_t = Thresholds(**opts.pop("thresholds"))
    options = FilterOptions(**opts, thresholds=old_t.replace(**(overrides or {})))
    t = options.thresholds
    assert t is not None and options.subset is not None
    config = InsceneConfig.from_flat(first["config"])
    iqa = first["iqa"]
    decisions = redecide(read_decisions(run), t)
    encode = EncodeStage(split=options.split, subset=options.subset, profile=options.profile,
                         fmt=options.image_format, quality=options.jpeg_quality,
                         iqa_metrics=PAPER_IQA if iqa == "paper" else ("piqe",))
    by_key: dict[str, InputRef] | None = None
    if inputs:
        pseudo = Pseudonymiser(salt) if options.pseudonymise and salt is not None else None
        if options.pseudonymise and pseudo is None:
            raise BadInputError("the first run was pseudonymised: give its salt to re-list its inputs")
        by_key = {r.key: r for r in list_inputs(inputs, identity_from="none", pseudonymiser=pseudo)}
    fingerprint = hashlib.sha256(json.dumps([str(run.resolve()), first.get("fingerprint"), options.to_json()],
                                            sort_keys=True, default=str).encode()).hexdigest()
    prepare_out_dir(out)
    _check_resume(out, fingerprint, first.get("salt_fingerprint"))
    _write_json(out / RUN_JSON, {**first, "options": options.to_json(), "rethreshold_of": str(run.resolve()),
                                 "fingerprint": fingerprint})
    sink = ShardSink(str(out / DATASET_DIR), options.split, options.subset, encode.field)
    tar_cache: dict[str, list[InputRef] | str] = {}
    cwd = first.get("cwd")
    copied = remade = 0
    for partition, part in decisions.groupby("partition", sort=True):
        partition = int(partition)
        if decision_path(out, partition).exists():
            continue
        old = _old_shard_members(run, options.split, options.subset, partition, encode.field)
        accepted = part[part["accepted"].astype(bool)]
        rows = part.copy()
        with PartitionOutput(sink, partition) as output:
            for idx, row in accepted.iterrows():
                key = row["key"]
                if key in old:
                    image, meta = old[key]
                    copied += 1
                else:
                    try:
                        m = _measured(row)
                        if by_key is not None and key in by_key:
                            ref = by_key[key]
                        elif str(row["source"]).startswith("pseudonymised:"):
                            raise ImageDecodeError("unreadable", key, "pseudonymised source: pass the inputs and salt")
                        else:
                            ref = _ref_from_source(str(row["source"]), tar_cache, cwd)
                        crop, extra = replay(ref, m, config.real_filter.crop_size, config.imageio.max_pixels)
                    except BadInputError as exc:  # one unreadable source is one rejected row, never the run
                        reason = exc.reason if isinstance(exc, ImageDecodeError) else "unreadable"
                        detail = exc.detail if isinstance(exc, ImageDecodeError) else str(exc)
                        rows.loc[idx, ["accepted", "stage", "reason"]] = [False, "decode", f"rethreshold: {reason}"]
                        if "m.decode_detail" not in rows:
                            rows["m.decode_detail"] = None
                        rows.loc[idx, "m.decode_detail"] = _safe_detail(detail, str(row["source"]))
                        continue
                    image = imageio.encode_image(crop, encode.fmt, quality=encode.quality)
                    meta = encode.meta(key, str(row["source"]), m, json.loads(row["backends"]), extra, crop.shape)
                    remade += 1
                output.write(Item(key=key, source=str(row["source"]), data={"image": image}, meta=meta))
        write_parquet_atomic(rows.reset_index(drop=True), decision_path(out, partition))
    refs_copied = _copy_refs(run, out, options.split)
    from inscene.shards import write_index

    if (out / DATASET_DIR).exists():
        write_index(out / DATASET_DIR)
    all_rows = read_decisions(out)
    summary = summarize(all_rows, int(all_rows["partition"].nunique()) if len(all_rows) else 0)
    acc, errors = summary.accepted, summary.errors
    from pipelines.report import funnel_counts, write_report

    report = write_report(out, all_rows, thresholds=dataclasses.asdict(t), iqa=iqa, detector=first["detector"],
                          title=f"filter-real --rethreshold ({options.profile})")
    funnel = funnel_counts(all_rows)
    doc = json.loads((out / RUN_JSON).read_text())
    doc.update(funnel=funnel, accepted=acc, rejected=summary.rejected, errors=errors, copied=copied,
               remade=remade, refs_copied=refs_copied, seconds=round(time.perf_counter() - t0, 2))
    _write_json(out / RUN_JSON, doc)
    console.print(f"filter-real --rethreshold: {acc} accepted ({copied} copied from {run}, {remade} re-made "
                  "from their sources)", markup=False, highlight=False)
    return FilterResult(out, summary, funnel, report, first["detector"], iqa, time.perf_counter() - t0)


# ---- threshold measurements -------------------------------------------------------------------------


def sample_photos() -> dict[str, np.ndarray]:
    """The real photos installed packages ship: scikit-image's astronaut and insightface's t1.jpg."""
    import importlib.util

    import skimage.data

    photos = {"astronaut": np.ascontiguousarray(skimage.data.astronaut())}
    spec = importlib.util.find_spec("insightface")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations)), "data", "images", "t1.jpg")
        if path.exists():
            photos["t1"] = imageio.decode_image(path)
    return photos


def measure_thresholds(
    sigmas: Sequence[float] = (0, 1, 1.5, 2, 3, 4), *, piqe: bool = True, settings: RealFilterSettings | None = None
) -> list[dict[str, Any]]:
    """The measurements behind the Stage 2 blur and the PIQE fallback thresholds.

    Each sample photo at its native scale, blurred with a Gaussian of each sigma (0 = sharp), and a
    "bokeh" copy (sharp only within 2x / 1x the face box, the rest blurred at sigma 4): the face and
    whole-image Laplacian variance exactly as Stage 2 computes them, and PIQE (when ``piqe``).

    Returns:
        Rows ``{"photo", "copy", "blur_face", "blur_image", "piqe"}``.
    """
    import cv2

    from inscene.quality import create_scorer

    s = settings or RealFilterSettings()
    det = make_detector("dlib", 10**6, 0)  # full resolution: these photos are small
    face_blur = create_scorer("laplacian", max_side=s.blur_face_side)
    image_blur = create_scorer("laplacian")
    piqe_scorer = create_scorer("piqe") if piqe else None
    rows = []
    for name, img in sample_photos().items():
        face = select_face(det.detect(img), "largest")
        copies: list[tuple[str, np.ndarray]] = [
            (f"sigma {g:g}" if g else "sharp", img if not g else cv2.GaussianBlur(img, (0, 0), g)) for g in sigmas
        ]
        x1, y1, x2, y2 = face.box
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        background = cv2.GaussianBlur(img, (0, 0), 4)
        for k in (2.0, 1.0):
            mask = np.zeros(img.shape[:2], np.float32)
            mask[max(0, int(cy - k * h)) : int(cy + k * h), max(0, int(cx - k * w)) : int(cx + k * w)] = 1
            mask = cv2.GaussianBlur(mask, (0, 0), 8)[..., None]
            copies.append((f"bokeh {k:g}x face", (img * mask + background * (1 - mask)).round().astype(np.uint8)))
        for label, copy in copies:
            rows.append({
                "photo": name,
                "copy": label,
                "blur_face": face_blur.score_array(copy, face.box),
                "blur_image": image_blur.score_array(copy),
                "piqe": float(piqe_scorer.score(copy)[0]) if piqe_scorer is not None else None,
            })
    return rows


# ---- demo ---------------------------------------------------------------------------------------------

#: The demo's lowered minimum shorter side. The package-shipped photos are small (the astronaut is
#: 512 px, t1.jpg 886 px): below §6.2's 1000 px they would all stop at Stage 1.
DEMO_MIN_SIDE = 256


def demo_inputs(folder: Path) -> Path:
    """Write the demo's photos: the two shipped photos with people, two without, and generated ones."""
    import importlib.util

    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    astronaut = skimage.data.astronaut()
    files["astronaut.png"] = imageio.encode_image(astronaut, "png")
    spec = importlib.util.find_spec("insightface")
    if spec is not None and spec.submodule_search_locations:
        group = Path(next(iter(spec.submodule_search_locations)), "data", "images", "t1.jpg")
        if group.exists():
            files["group-t1.jpg"] = group.read_bytes()
    files["coffee.jpg"] = imageio.encode_image(skimage.data.coffee(), "jpeg", quality=92)
    files["chelsea.png"] = imageio.encode_image(skimage.data.chelsea(), "png")
    import cv2

    blurred = cv2.GaussianBlur(astronaut, (0, 0), 3)
    files["astronaut-blurred.jpg"] = imageio.encode_image(blurred, "jpeg", quality=92)
    files["astronaut-small.png"] = imageio.encode_image(astronaut[::3, ::3], "png")
    files["truncated.jpg"] = files["coffee.jpg"][: len(files["coffee.jpg"]) // 3]
    for name, data in files.items():
        path = folder / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    return folder


def demo_step(workdir: Path) -> dict[str, Any]:
    """Run filter-real offline over the shipped photos and a few generated ones; return the funnel.

    The minimum shorter side is lowered to :data:`DEMO_MIN_SIDE` (256 px) because the shipped
    photos are smaller than §6.2's 1000 px; everything else is the paper's, except that Stage 3 uses
    the embedded PIQE when the IQA weights are absent (as on any offline machine).

    Returns:
        ``funnel`` (counts per stage), ``accepted``, ``rejected``, ``errors``, ``by_reason``, ``iqa``,
        ``detector``, ``report`` (the Markdown report's path), ``seconds``.
    """
    from rich.console import Console

    workdir = Path(workdir)
    inputs = demo_inputs(workdir / "filter-real-inputs")
    thresholds = Thresholds.for_profile("gallery", min_short_side=DEMO_MIN_SIDE)
    options = FilterOptions(profile="gallery", thresholds=thresholds, partition_size=4, detector="dlib")
    out = workdir / "filter-real"
    result = run_filter_real([inputs], out, options, console=Console(stderr=True, quiet=True))
    return {
        "funnel": result.funnel,
        "accepted": result.summary.accepted,
        "rejected": result.summary.rejected,
        "errors": result.summary.errors,
        "by_reason": result.summary.by_reason,
        "iqa": result.iqa,
        "detector": result.detector,
        "report": result.report.get("markdown"),
        "seconds": round(result.seconds, 1),
    }


def clear_run(out: str | os.PathLike[str]) -> None:
    """Delete a filter-real output folder (tests and benchmarks)."""
    shutil.rmtree(out, ignore_errors=True)
