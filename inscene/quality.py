"""Image quality scorers: pyiqa adapters and embedded ones, behind one registry.

Provenance: Face2Scene (arXiv 2603.16570) §4.1 (evaluation metrics: PSNR, SSIM, LPIPS, DISTS, FID,
MUSIQ, CLIP-IQA, MANIQA, LIQE, TOPIQ) and §6.2 stage 3 (the MUSIQ / CLIP-IQA / MANIQA filter).
PSNR and SSIM follow the S3Diff evaluation the paper builds on: pyiqa with
``test_y_channel=True, color_space='ycbcr'`` (Y of ITU-R BT.601 YCbCr).

Usage::

    from inscene.quality import create_scorer, list_scorers
    psnr = create_scorer("psnr")                 # embedded, weight-free
    psnr.score(pred, gt)                         # (N,3,H,W) in [0,1] -> (N,) float64
    musiq = create_scorer("musiq")               # MissingWeightsError naming the file when absent
    musiq = create_scorer("musiq", pretrained=False)   # random init: plumbing tests only

Every scorer declares :class:`ScorerInfo`: full- or no-reference, direction, score range, backend,
the :mod:`inscene.weights` entries it needs, and a ``version`` string that changes whenever the
numbers could (implementation, pyiqa version, options, checkpoint or random init), so cached scores
are never mixed across versions. Creating a scorer loads nothing heavy; models are built on first
use, once per process (:func:`inscene.runtime.cached_backend`).

Weights of pyiqa metrics are found with :func:`inscene.weights.locate`; while a metric is built,
pyiqa's own download cache (``pyiqa/``), the torch hub dir (torchvision and CLIP backbones) and
nothing else are pointed at the folder found, so pyiqa runs its upstream loading code on the local
files and never downloads (an attempted download raises). Two deliberate differences from a plain
``pyiqa.create_metric``:

* MANIQA and TOPIQ build their timm backbone without ImageNet weights, since the metric's own
  checkpoint (loaded strictly) overwrites every backbone tensor anyway; they need only that file.
* ``psnr``/``ssim`` (and the ``-rgb`` variants) are computed by an embedded NumPy/OpenCV
  implementation of pyiqa's exact formulas (float64 separable Gaussian for SSIM): the pyiqa SSIM
  takes ~3 s per megapixel on a CPU, this one ~0.1 s. Tests pin the two to 1e-6;
  ``psnr-pyiqa``/``ssim-pyiqa`` run pyiqa itself.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from inscene.errors import BadInputError, InsceneError, MissingWeightsError

__all__ = [
    "PSNR_IDENTICAL_DB",
    "Scorer",
    "ScorerInfo",
    "as_batch",
    "box_bounds",
    "create_scorer",
    "get_scorer_info",
    "list_scorers",
    "pyiqa_sources",
    "register_scorer",
]

Mode = Literal["FR", "NR"]

#: What pyiqa's PSNR reports for identical images: ``10 log10(1 / (0 + 1e-8))`` (its eps).
#: Our PSNR returns ``+inf`` there (as scikit-image does); aggregations count it as this value.
PSNR_IDENTICAL_DB = 80.0
_PSNR_EPS = 1e-8


@dataclass(frozen=True)
class ScorerInfo:
    """What a scorer is, before anything is loaded.

    Attributes:
        name: registry name.
        mode: ``FR`` (needs a reference image) or ``NR``.
        lower_better: direction.
        score_range: ``(low, high)``; ``inf`` for open ends; approximate for learned metrics.
        backend: implementation, e.g. ``pyiqa:musiq`` or ``opencv``.
        weights: :mod:`inscene.weights` entries needed (empty: weight-free, works offline).
        description: one line for users.
        paper: where the paper uses it (§), or why the toolkit has it.
        gpu: benefits from a GPU.
        set_level: a distribution metric (FID): per-image features, one score per image set.
    """

    name: str
    mode: Mode
    lower_better: bool
    score_range: tuple[float, float]
    backend: str
    weights: tuple[str, ...] = ()
    description: str = ""
    paper: str = ""
    gpu: bool = False
    set_level: bool = False

    @property
    def needs_weights(self) -> bool:
        return bool(self.weights)


def _device(device: str | None) -> str:
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def as_batch(images: Any) -> np.ndarray:
    """Images as a float32 ``(N, 3, H, W)`` array in [0, 1].

    Accepts a torch tensor or array ``(N,3,H,W)``/``(3,H,W)`` in [0, 1], an ``HxWx3`` uint8 array,
    or a list of ``HxWx3`` uint8 arrays of one size.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise BadInputError("no images to score")
        return np.concatenate([as_batch(im) for im in images], axis=0)
    if hasattr(images, "detach"):  # torch tensor
        images = images.detach().float().cpu().numpy()
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[3] != 3:
            raise BadInputError(f"uint8 images must be HxWx3 (or NxHxWx3), got {arr.shape}")
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise BadInputError(f"images must be (N, 3, H, W) in [0, 1], got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if arr.size and (float(arr.min()) < -1e-6 or float(arr.max()) > 1 + 1e-6):
        raise BadInputError(
            f"images must be in [0, 1], got min {float(arr.min()):.4f}, max {float(arr.max()):.4f}"
        )
    return arr


class Scorer:
    """Base class of every scorer. Subclasses set :attr:`info` and implement :meth:`_score`.

    Args:
        device: ``cuda``/``cpu``/...; default: CUDA when available. Embedded NumPy scorers ignore it.
        batch_size: images per forward pass.
    """

    info: ClassVar[ScorerInfo]
    #: smallest image side the scorer works on (0: any); smaller images get a one-line BadInputError
    min_size: ClassVar[int] = 0

    def __init__(self, device: str | None = None, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
        self.device = device
        self.batch_size = int(batch_size)

    # -- metadata ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def mode(self) -> Mode:
        return self.info.mode

    @property
    def lower_better(self) -> bool:
        return self.info.lower_better

    @property
    def score_range(self) -> tuple[float, float]:
        return self.info.score_range

    @property
    def backend(self) -> str:
        return self.info.backend

    @property
    def needs_weights(self) -> tuple[str, ...]:
        return self.info.weights

    @property
    def version(self) -> str:
        """Changes whenever the numbers could; part of every cache key."""
        return f"{self.info.backend}:{_inscene_version()}"

    def describe(self) -> dict[str, Any]:
        """Flat description recorded with every score."""
        return {
            "name": self.name,
            "mode": self.mode,
            "lower_better": self.lower_better,
            "score_range": list(self.score_range),
            "backend": self.backend,
            "weights": list(self.needs_weights),
            "version": self.version,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.version!r})"

    # -- scoring ----------------------------------------------------------------------------

    def load(self) -> None:
        """Build the model in this process (idempotent; a no-op for embedded scorers)."""

    def score(self, images: Any, references: Any = None) -> np.ndarray:
        """Score a batch.

        Args:
            images: ``(N, 3, H, W)`` in [0, 1] (see :func:`as_batch` for other accepted forms).
            references: same shape, for full-reference scorers.

        Returns:
            ``(N,)`` float64 scores.
        """
        x = as_batch(images)
        if self.min_size and min(x.shape[2:]) < self.min_size:
            raise BadInputError(f"{self.name} needs images of at least {self.min_size}x{self.min_size} pixels, "
                                f"got {x.shape[3]}x{x.shape[2]}")
        ref = None
        if self.mode == "FR":
            if references is None:
                raise BadInputError(f"{self.name} is full-reference: pass references=")
            ref = as_batch(references)
            if ref.shape != x.shape:
                raise BadInputError(
                    f"{self.name}: images {tuple(x.shape)} and references {tuple(ref.shape)} differ"
                )
        out = []
        for i in range(0, len(x), self.batch_size):
            r = None if ref is None else ref[i : i + self.batch_size]
            out.append(np.asarray(self._score(x[i : i + self.batch_size], r), np.float64).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0)

    def _score(self, x: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


@functools.lru_cache(maxsize=1)
def _inscene_version() -> str:
    from inscene import __version__

    return __version__


@functools.lru_cache(maxsize=1)
def _pyiqa_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyiqa")
    except PackageNotFoundError:
        return "absent"


# ============================================================================================
# Embedded: PSNR / SSIM with pyiqa's formulas (S3Diff convention), Laplacian variance
# ============================================================================================

# ITU-R BT.601 (pyiqa.utils.color_util.rgb2ycbcr, first row), RGB in [0, 1] -> Y in [16, 235]/255.
_YCBCR_Y = np.array([65.481, 128.553, 24.966], np.float32)


def _y_channel(x: np.ndarray) -> np.ndarray:
    """``(N,3,H,W)`` float32 -> ``(N,1,H,W)`` Y in [0, 1], computed in float32 as pyiqa does."""
    y = x[:, 0] * _YCBCR_Y[0] + x[:, 1] * _YCBCR_Y[1] + x[:, 2] * _YCBCR_Y[2]
    return ((y + np.float32(16.0)) / np.float32(255.0))[:, None]


class _EmbeddedFR(Scorer):
    test_y: ClassVar[bool] = True

    @property
    def convention(self) -> str:
        return "Y of BT.601 YCbCr (pyiqa test_y_channel=True, color_space='ycbcr')" if self.test_y else "RGB"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "convention": self.convention}


class PSNRScorer(_EmbeddedFR):
    """PSNR as pyiqa computes it (``10 log10(1 / (mse + 1e-8))``), except ``+inf`` when identical."""

    info = ScorerInfo(
        "psnr", "FR", False, (0.0, math.inf), "inscene:psnr(pyiqa-formula)",
        description="PSNR on the Y channel of YCbCr (S3Diff / pyiqa convention)",
        paper="§4.1, Tables 2-3",
    )

    @property
    def version(self) -> str:
        return f"inscene-psnr/1:y={int(self.test_y)}:eps=1e-8:inf-if-identical"

    def _score(self, x: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        assert ref is not None
        if self.test_y:
            a, b = _y_channel(x), _y_channel(ref)
        else:
            a, b = x, ref
        diff = a.astype(np.float64) - b.astype(np.float64)
        mse = np.mean(diff * diff, axis=(1, 2, 3))
        out = 10.0 * np.log10(1.0 / (mse + _PSNR_EPS))
        return np.where(mse == 0, np.inf, out)


class PSNRRGBScorer(PSNRScorer):
    info = ScorerInfo(
        "psnr-rgb", "FR", False, (0.0, math.inf), "inscene:psnr(pyiqa-formula)",
        description="PSNR over the three RGB channels", paper="variant of §4.1 PSNR",
    )
    test_y = False


@functools.lru_cache(maxsize=1)
def _gauss_1d() -> np.ndarray:
    # pyiqa.matlab_utils.fspecial(11, 1.5): MATLAB's fspecial('gaussian'); separable.
    t = np.arange(11, dtype=np.float64) - 5.0
    g = np.exp(-(t * t) / (2.0 * 1.5 * 1.5))
    return g / g.sum()


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two float64 planes in 0..255, valid window 11x11 Gaussian (sigma 1.5)."""
    import cv2

    if min(a.shape) < 11:
        raise BadInputError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}")
    g = _gauss_1d()

    def filt(img: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(img, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(a * a) - mu1_sq
    s2 = filt(b * b) - mu2_sq
    s12 = filt(a * b) - mu12
    cs = np.maximum((2 * s12 + c2) / (s1 + s2 + c2), 0.0)  # pyiqa clamps cs at 0 (relu)
    return float((((2 * mu12 + c1) / (mu1_sq + mu2_sq + c1)) * cs).mean())


class SSIMScorer(_EmbeddedFR):
    """SSIM as pyiqa computes it: 8-bit rounded values, 11x11 Gaussian (1.5), 'valid', no downsample."""

    info = ScorerInfo(
        "ssim", "FR", False, (0.0, 1.0), "inscene:ssim(pyiqa-formula)",
        description="SSIM on the Y channel of YCbCr (S3Diff / pyiqa convention)",
        paper="§4.1, Tables 2-3",
    )

    @property
    def version(self) -> str:
        return f"inscene-ssim/1:y={int(self.test_y)}:gauss11-1.5:valid:round8"

    def _score(self, x: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        assert ref is not None
        if self.test_y:
            a = np.round(_y_channel(x) * np.float32(255.0))
            b = np.round(_y_channel(ref) * np.float32(255.0))
        else:
            a = np.round(x * np.float32(255.0))
            b = np.round(ref * np.float32(255.0))
        a = a.astype(np.float64)
        b = b.astype(np.float64)
        return np.array(
            [np.mean([_ssim_plane(a[n, c], b[n, c]) for c in range(a.shape[1])]) for n in range(len(a))]
        )


class SSIMRGBScorer(SSIMScorer):
    info = ScorerInfo(
        "ssim-rgb", "FR", False, (0.0, 1.0), "inscene:ssim(pyiqa-formula)",
        description="SSIM averaged over RGB channels (pyiqa 'ssimc')", paper="variant of §4.1 SSIM",
    )
    test_y = False


class LaplacianVarianceScorer(Scorer):
    """Variance of the Laplacian: a sharpness (blur) measure, higher is sharper.

    Measured on the 8-bit gray image (OpenCV ``COLOR_RGB2GRAY``, BT.601 luma, values 0..255) with
    OpenCV's 4-neighbour Laplacian (``ksize=1``), as the variance over the region. Values therefore
    match the usual 8-bit thresholds (e.g. ~100 for "blurry"). The measure depends on resolution:
    with ``max_side`` the region is first downscaled (``INTER_AREA``, never upscaled) so that its
    longer side is at most ``max_side`` pixels, which makes faces of different sizes comparable.

    Args:
        max_side: optional working resolution (pixels, longer side).
        ksize: OpenCV Laplacian aperture (1 = the 3x3 4-neighbour kernel).
    """

    info = ScorerInfo(
        "laplacian", "NR", False, (0.0, math.inf), "opencv:laplacian-variance",
        description="variance of the Laplacian of the 8-bit gray image (sharpness)",
        paper="embedded blur check (real-photo filter); not in the paper's tables",
    )

    def __init__(
        self, device: str | None = None, batch_size: int = 8, max_side: int | None = None, ksize: int = 1
    ) -> None:
        super().__init__(device, batch_size)
        if max_side is not None and max_side < 8:
            raise BadInputError(f"max_side must be >= 8 pixels, got {max_side}")
        if ksize not in (1, 3, 5, 7):
            raise BadInputError(f"ksize must be 1, 3, 5 or 7, got {ksize}")
        self.max_side = max_side
        self.ksize = ksize

    @property
    def version(self) -> str:
        return f"opencv-laplacian-var/1:gray8:ksize={self.ksize}:max_side={self.max_side}"

    def score_array(self, image: np.ndarray, box: Sequence[float] | None = None) -> float:
        """Score one ``HxWx3`` uint8 RGB image, optionally only inside ``box`` ``[x1, y1, x2, y2]``."""
        import cv2

        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise BadInputError(f"expected an HxWx3 uint8 RGB image, got {img.dtype} {img.shape}")
        if box is not None:
            x1, y1, x2, y2 = box_bounds(box, img.shape)
            img = img[y1:y2, x1:x2]
        gray = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        if self.max_side is not None and max(h, w) > self.max_side:
            f = self.max_side / max(h, w)
            gray = cv2.resize(
                gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
            )
        return float(cv2.Laplacian(gray, cv2.CV_64F, ksize=self.ksize).var())

    def score(self, images: Any, references: Any = None, boxes: Sequence[Any] | None = None) -> np.ndarray:
        """Score a batch; ``boxes`` (one ``[x1,y1,x2,y2]`` or None per image) restricts each to a region."""
        x = as_batch(images)
        u8 = np.clip(np.round(x.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)
        if boxes is not None and len(boxes) != len(u8):
            raise BadInputError(f"{len(boxes)} boxes for {len(u8)} images")
        return np.array([self.score_array(u8[i], None if boxes is None else boxes[i]) for i in range(len(u8))])


def box_bounds(box: Sequence[float], shape: Sequence[int]) -> tuple[int, int, int, int]:
    """``[x1, y1, x2, y2]`` in pixels -> integer bounds covering it, clipped to the image."""
    h, w = int(shape[0]), int(shape[1])
    x1, y1 = max(0, math.floor(float(box[0]))), max(0, math.floor(float(box[1])))
    x2, y2 = min(w, math.ceil(float(box[2]))), min(h, math.ceil(float(box[3])))
    if x2 <= x1 or y2 <= y1:
        raise BadInputError(f"box {list(box)} is empty inside a {w}x{h} image")
    return x1, y1, x2, y2


# ============================================================================================
# pyiqa adapters
# ============================================================================================

_BUILD_LOCK = threading.RLock()


class _DownloadAttempted(InsceneError):
    exit_code = 2


def _no_download(*args: Any, **kwargs: Any) -> None:
    url = args[0] if args else kwargs.get("url", "?")
    raise _DownloadAttempted(
        f"pyiqa tried to download {url}; inscene never downloads at run time "
        "(run `inscene weights fetch NAME` on a machine with internet)"
    )


@contextlib.contextmanager
def _patched(obj: Any, attr: str, value: Any) -> Iterator[None]:
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


# OpenAI CLIP hyper-parameters (as pyiqa.archs.clip_model.build_model infers them from the
# released checkpoints), used to build randomly initialised backbones for pretrained=False.
_CLIP_ARCH = {
    "RN50": dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None),
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32),
}
_CLIP_TEXT = dict(context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                  transformer_layers=12)


def _ensure_openai_clip_importable() -> None:
    """Import the ``clip`` package pyiqa's CLIP metrics use, working around its pkg_resources import.

    openai-clip 1.0.1 runs ``from pkg_resources import packaging`` at import time, and setuptools
    81+ no longer ships ``pkg_resources``. When (and only when) that import fails, a stub module
    holding the real ``packaging`` package is visible while ``clip`` is imported, then removed.
    """
    import sys

    if "clip" in sys.modules:
        return
    try:
        importlib.import_module("clip")
        return
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
    import types

    import packaging.version

    stub = types.ModuleType("pkg_resources")
    stub.packaging = packaging  # type: ignore[attr-defined]
    assert packaging.version  # the submodule clip uses
    sys.modules["pkg_resources"] = stub
    try:
        for name in [m for m in sys.modules if m == "clip" or m.startswith("clip.")]:
            del sys.modules[name]
        importlib.import_module("clip")
    finally:
        if sys.modules.get("pkg_resources") is stub:
            del sys.modules["pkg_resources"]


def _random_clip(name: str, device: Any = "cpu", **_: Any) -> Any:
    from pyiqa.archs.clip_model import CLIP

    if name not in _CLIP_ARCH:
        raise BadInputError(f"no random-init recipe for CLIP backbone {name!r}; known: {sorted(_CLIP_ARCH)}")
    return CLIP(**_CLIP_ARCH[name], **_CLIP_TEXT).float().eval().to(device)


@contextlib.contextmanager
def pyiqa_sources(hub_root: Path | None, random_init: bool) -> Iterator[None]:
    """Point pyiqa's loaders at local files (or at random init) while one metric is built.

    Public for code that builds pyiqa networks itself (the restorer's LPIPS loss): use it around
    the constructor, never around inference.

    Module attributes are swapped under a process-wide lock and restored afterwards; every
    download function pyiqa, torchvision and CLIP could reach raises instead.
    """
    _ensure_openai_clip_importable()
    import pyiqa.archs.clip_model as clip_model
    import pyiqa.archs.inception as inception
    import pyiqa.utils.download_util as dl
    import timm
    import torch
    import torch.hub
    import torchvision.models as tvm

    real_create = timm.create_model

    def timm_without_imagenet(*args: Any, **kwargs: Any) -> Any:
        kwargs["pretrained"] = False
        return real_create(*args, **kwargs)

    with _BUILD_LOCK, contextlib.ExitStack() as stack:
        enter = stack.enter_context
        enter(_patched(dl, "download_url_to_file", _no_download))
        enter(_patched(torch.hub, "download_url_to_file", _no_download))
        enter(_patched(clip_model, "_download", _clip_download_guard(clip_model._download)))
        enter(_patched(timm, "create_model", timm_without_imagenet))
        tmp = enter(tempfile.TemporaryDirectory(prefix="inscene-pyiqa-"))
        if random_init:
            for fn in ("alexnet", "vgg16", "squeezenet1_1"):
                real = getattr(tvm, fn)
                enter(_patched(tvm, fn, functools.partial(_tv_random, real)))
            for mod in ("clipiqa_arch", "liqe_arch", "topiq_arch"):
                m = importlib.import_module(f"pyiqa.archs.{mod}")
                enter(_patched(m, "load", _random_clip))
            enter(_patched(inception, "load_pretrained_network", lambda *a, **k: None))
            # LIQE caches text features computed with its CLIP: never let random ones land in
            # the user's cache, where a later real run would pick them up.
            liqe = importlib.import_module("pyiqa.archs.liqe_arch")
            enter(_patched(liqe, "DEFAULT_CACHE_DIR", tmp))
            enter(_patched(dl, "DEFAULT_CACHE_DIR", tmp))
        elif hub_root is not None:
            enter(_patched(dl, "DEFAULT_CACHE_DIR", str(hub_root / "pyiqa")))
            old_hub = getattr(torch.hub, "_hub_dir", None)
            torch.hub.set_dir(str(hub_root))
            stack.callback(setattr, torch.hub, "_hub_dir", old_hub)
        yield


def _tv_random(real: Any, *args: Any, **kwargs: Any) -> Any:
    kwargs.pop("pretrained", None)
    kwargs["weights"] = None
    return real(*args, **kwargs)


def _clip_download_guard(real: Any) -> Any:
    def guarded(url: str, root: str) -> str:
        target = os.path.join(root, os.path.basename(url))
        if not os.path.isfile(target):
            _no_download(url)
        return real(url, root)  # checks the sha256; a mismatch would re-download, which raises

    return guarded


class PyiqaScorer(Scorer):
    """A pyiqa metric with its upstream default options.

    Args:
        device: torch device (default: CUDA when available).
        batch_size: images per forward pass.
        pretrained: False builds the architecture with random weights and loads no file (for
            plumbing tests: shapes, ranges, direction); its scores mean nothing and its
            ``version`` says ``random-init`` so they never mix with real ones.
        weights_path: explicit folder (a torch hub dir holding ``pyiqa/<file>``) or file; the
            only place looked in (see :func:`inscene.weights.locate`).
        **opts: extra options passed to ``pyiqa.create_metric`` (e.g. ``test_sample`` for MANIQA).

    Raises:
        MissingWeightsError: ``pretrained`` and the metric's files are not on this machine: one
            line naming the file, every folder looked in, and the fetch command.
    """

    pyiqa_name: ClassVar[str] = ""
    pyiqa_opts: ClassVar[dict[str, Any]] = {}
    weights_name: ClassVar[str] = ""
    random_init_supported: ClassVar[bool] = True

    def __init__(
        self,
        device: str | None = None,
        batch_size: int = 8,
        pretrained: bool = True,
        weights_path: str | os.PathLike[str] | None = None,
        **opts: Any,
    ) -> None:
        super().__init__(device, batch_size)
        self.pretrained = bool(pretrained)
        self.opts = {**self.pyiqa_opts, **opts}
        self.weights_path = weights_path
        self._root: Path | None = None
        if self.info.weights and self.pretrained:
            self._root = self._locate()

    def _locate(self) -> Path:
        """The torch hub folder holding the metric's files, or the explicit file given."""
        from inscene import weights

        found = weights.locate(self.weights_name, self.weights_path, check_requires=False)
        if found.is_file():
            spec = weights.get_spec(self.weights_name)
            if not any(Path(f).name == found.name for f in spec.files):
                raise MissingWeightsError(spec.name, spec.files[0], [str(found)], spec.fetch)
        return found

    @contextlib.contextmanager
    def _hub(self, root: Path | None) -> Iterator[Path | None]:
        """``root`` as a torch hub folder; an explicit file is linked into a temporary one."""
        if root is None or not root.is_file():
            yield root
            return
        from inscene import weights

        rel = next(f for f in weights.get_spec(self.weights_name).files if Path(f).name == root.name)
        with tempfile.TemporaryDirectory(prefix="inscene-hub-") as tmp:
            link = Path(tmp) / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(root.resolve())
            yield Path(tmp)

    @property
    def checkpoint(self) -> str:
        """The metric's own weight file name (``random-init`` / ``weight-free`` otherwise)."""
        if not self.info.weights:
            return "weight-free"
        if not self.pretrained:
            return "random-init"
        from inscene import weights

        return Path(weights.get_spec(self.weights_name).files[0]).name

    @property
    def version(self) -> str:
        opts = json.dumps(self.opts, sort_keys=True, default=str)
        return f"pyiqa-{_pyiqa_version()}:{self.pyiqa_name}:{opts}:{self.checkpoint}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "checkpoint": self.checkpoint, "pyiqa_options": self.opts}

    def _cache_key(self, device: str) -> str:
        return f"quality:{self.version}:{device}:{self._root}"

    def _metric(self) -> Any:
        from inscene.runtime import cached_backend

        device = _device(self.device)
        return cached_backend(self._cache_key(device), functools.partial(self._build, device))

    def _build(self, device: str) -> Any:
        import pyiqa

        kwargs = dict(self.opts)
        random_init = not self.pretrained and bool(self.info.weights)
        if random_init and self.random_init_supported:
            kwargs["pretrained"] = False
        root = self._root
        if self.pretrained and root is None and self.info.weights:
            root = self._root = self._locate()
        try:
            with self._hub(root) as hub, pyiqa_sources(hub, random_init), contextlib.redirect_stdout(io.StringIO()):
                metric = pyiqa.create_metric(self.pyiqa_name, as_loss=False, device=device, **kwargs)
        except (MissingWeightsError, _DownloadAttempted):
            raise
        except FileNotFoundError as exc:
            raise InsceneError(f"{self.name}: a weight file pyiqa needs is missing: {exc}") from exc
        metric.eval()
        return metric

    def load(self) -> None:
        self._metric()

    def _score(self, x: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        import torch

        metric = self._metric()
        dev = metric.device if hasattr(metric, "device") else "cpu"
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
            if self.mode == "FR":
                assert ref is not None
                out = metric(xt, torch.from_numpy(np.ascontiguousarray(ref)).to(dev))
            else:
                out = metric(xt)
        return out.detach().float().cpu().numpy().reshape(-1).astype(np.float64)


def _pyiqa_cls(
    name: str,
    pyiqa_name: str,
    mode: Mode,
    lower_better: bool,
    score_range: tuple[float, float],
    description: str,
    paper: str,
    *,
    weights: str | None = None,
    opts: dict[str, Any] | None = None,
    gpu: bool = True,
    random_init: bool = True,
    min_size: int = 0,
) -> type[PyiqaScorer]:
    info = ScorerInfo(
        name, mode, lower_better, score_range, f"pyiqa:{pyiqa_name}",
        weights=(weights,) if weights else (), description=description, paper=paper, gpu=gpu,
    )
    attrs = {
        "info": info,
        "pyiqa_name": pyiqa_name,
        "pyiqa_opts": dict(opts or {}),
        "weights_name": weights or "",
        "random_init_supported": random_init,
        "min_size": min_size,
        "__doc__": f"{description} (pyiqa '{pyiqa_name}').",
    }
    cls_name = "".join(p.capitalize() for p in name.replace("-", "_").split("_")) + "Scorer"
    return type(cls_name, (PyiqaScorer,), attrs)


LPIPSScorer = _pyiqa_cls(
    "lpips", "lpips", "FR", True, (0.0, 1.0), "LPIPS v0.1, AlexNet (pyiqa default)", "§4.1, Tables 2-3",
    weights="lpips",
)
DISTSScorer = _pyiqa_cls("dists", "dists", "FR", True, (0.0, 1.0), "DISTS", "§4.1, Tables 2-3", weights="dists")
MUSIQScorer = _pyiqa_cls(
    "musiq", "musiq", "NR", False, (0.0, 100.0), "MUSIQ trained on KonIQ-10k", "§4.1, §6.2 stage 3",
    weights="musiq",
)
CLIPIQAScorer = _pyiqa_cls(
    "clipiqa", "clipiqa", "NR", False, (0.0, 1.0), "CLIP-IQA (RN50, pyiqa's prompt ensemble)",
    "§4.1, §6.2 stage 3", weights="clipiqa", random_init=False,
)
MANIQAScorer = _pyiqa_cls(
    "maniqa", "maniqa", "NR", False, (0.0, 1.0), "MANIQA trained on KonIQ-10k", "§4.1, §6.2 stage 3",
    weights="maniqa",
)
LIQEScorer = _pyiqa_cls(
    "liqe", "liqe", "NR", False, (1.0, 5.0), "LIQE trained on KonIQ-10k", "§4.1, Tables 2 and 4",
    weights="liqe",
)
TOPIQScorer = _pyiqa_cls(
    "topiq_nr", "topiq_nr", "NR", False, (0.0, 1.0), "TOPIQ (CFANet, ResNet-50, KonIQ-10k)",
    "§4.1, Tables 2 and 4", weights="topiq_nr",
)
PIQEScorer = _pyiqa_cls(
    "piqe", "piqe", "NR", True, (0.0, 100.0), "PIQE (weight-free, embedded NR default)",
    "embedded NR default (DESIGN.md); not in the paper", gpu=False, random_init=False,
    min_size=8,  # pyiqa pads to 16x16 blocks by reflection: fewer than 8 pixels on a side fail inside torch
)
PSNRPyiqaScorer = _pyiqa_cls(
    "psnr-pyiqa", "psnr", "FR", False, (0.0, math.inf), "PSNR computed by pyiqa itself (Y, ycbcr)",
    "§4.1 (reference implementation of 'psnr')", opts={"test_y_channel": True, "color_space": "ycbcr"},
    gpu=False, random_init=False,
)
SSIMPyiqaScorer = _pyiqa_cls(
    "ssim-pyiqa", "ssim", "FR", False, (0.0, 1.0), "SSIM computed by pyiqa itself (Y, ycbcr)",
    "§4.1 (reference implementation of 'ssim')", opts={"test_y_channel": True, "color_space": "ycbcr"},
    gpu=False, random_init=False,
)


class FIDScorer(PyiqaScorer):
    """FID as pyiqa computes it folder to folder (clean-fid "clean" mode, InceptionV3 pool3).

    Set-level: :meth:`features` gives each image's 2048-d Inception feature (through pyiqa's own
    folder pipeline, so resizing is identical), and :meth:`distance` the Fréchet distance between
    two feature sets, with pyiqa's ``frechet_distance``. Per-image features can thus be cached and
    computed in parallel partitions.
    """

    info = ScorerInfo(
        "fid", "NR", True, (0.0, math.inf), "pyiqa:fid", weights=("fid",),
        description="FID, restored vs ground-truth image sets (pyiqa, clean mode)",
        paper="§4.1, Tables 2-3", gpu=True, set_level=True,
    )
    pyiqa_name = "fid"
    weights_name = "fid"
    random_init_supported = False

    def score(self, images: Any, references: Any = None) -> np.ndarray:
        raise BadInputError("fid is a set-level metric: use features() and distance()")

    def features(self, images: Any) -> np.ndarray:
        """``(N, 2048)`` float64 Inception features.

        Args:
            images: ``(N,3,H,W)`` in [0, 1], or a list of images of any sizes (each ``(3,H,W)``
                in [0, 1] or ``HxWx3`` uint8); pyiqa resizes each to 299x299 (clean mode).
        """
        import torch
        from PIL import Image
        from pyiqa.archs.fid_arch import get_folder_features

        items = list(images) if isinstance(images, (list, tuple)) else list(as_batch(images))
        metric = self._metric()
        dev = metric.device if hasattr(metric, "device") else torch.device("cpu")
        with tempfile.TemporaryDirectory(prefix="inscene-fid-") as tmp:
            for i, item in enumerate(items):
                x = as_batch(item)[0]
                u8 = np.clip(np.round(x.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
                Image.fromarray(u8).save(os.path.join(tmp, f"{i:06d}.png"), compress_level=1)
            with contextlib.redirect_stdout(io.StringIO()):
                feats = get_folder_features(
                    tmp, metric.net.model, num_workers=0, batch_size=self.batch_size,
                    test_img_size=metric.net.test_img_size, device=dev, mode="clean", verbose=False,
                )
        return np.asarray(feats, np.float64)

    @staticmethod
    def distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
        """Fréchet distance of two feature sets (pyiqa's ``frechet_distance``)."""
        from pyiqa.archs.fid_arch import frechet_distance

        a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
        if len(a) < 2 or len(b) < 2:
            raise BadInputError(f"FID needs at least 2 images per set, got {len(a)} and {len(b)}")
        mu1, sig1 = a.mean(axis=0), np.cov(a, rowvar=False)
        mu2, sig2 = b.mean(axis=0), np.cov(b, rowvar=False)
        return float(frechet_distance(mu1, sig1, mu2, sig2))


# ============================================================================================
# Registry
# ============================================================================================

_SCORERS: dict[str, type[Scorer] | str] = {
    cls.info.name: cls
    for cls in (
        PSNRScorer, PSNRRGBScorer, SSIMScorer, SSIMRGBScorer, LaplacianVarianceScorer,
        LPIPSScorer, DISTSScorer, MUSIQScorer, CLIPIQAScorer, MANIQAScorer, LIQEScorer,
        TOPIQScorer, FIDScorer, PIQEScorer, PSNRPyiqaScorer, SSIMPyiqaScorer,
    )
}
_ALIASES = {"topiq": "topiq_nr", "clip-iqa": "clipiqa", "laplacian-variance": "laplacian"}


def _resolve(target: type[Scorer] | str) -> type[Scorer]:
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)
    return target


def _lookup(name: str) -> type[Scorer]:
    key = _ALIASES.get(name, name)
    if key not in _SCORERS:
        raise BadInputError(f"unknown scorer '{name}'; known: {', '.join(list_scorers())}")
    return _resolve(_SCORERS[key])


def create_scorer(name: str, device: str | None = None, **opts: Any) -> Scorer:
    """A scorer by name (see :func:`list_scorers`).

    Args:
        name: registry name (``psnr``, ``ssim``, ``lpips``, ``musiq``, ``laplacian``, ...).
        device: torch device for learned metrics (default: CUDA when available).
        **opts: the scorer's options (``pretrained``, ``weights_path``, ``batch_size``, ...).

    Raises:
        BadInputError: unknown name or option.
        MissingWeightsError: a learned metric whose weights are not on this machine.
    """
    cls = _lookup(name)
    try:
        return cls(device=device, **opts)
    except TypeError as exc:
        raise BadInputError(f"scorer '{name}': {exc}") from exc


def get_scorer_info(name: str) -> ScorerInfo:
    """A scorer's metadata without creating it (nothing is imported or located)."""
    return _lookup(name).info


def list_scorers(mode: Mode | None = None, *, weight_free: bool | None = None) -> list[str]:
    """Registered scorer names, optionally only FR/NR ones or only (non-)weight-free ones."""
    out = []
    for name in sorted(_SCORERS):
        info = _resolve(_SCORERS[name]).info
        if mode is not None and info.mode != mode:
            continue
        if weight_free is not None and (not info.weights) != weight_free:
            continue
        out.append(name)
    return out


def register_scorer(name: str, target: type[Scorer] | str) -> None:
    """Add a scorer class (or ``"module:Class"``) under ``name``."""
    _SCORERS[name] = target

