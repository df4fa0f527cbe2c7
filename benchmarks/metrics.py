"""Evaluation metrics: the paper's ten, the ID score, and embedded extras, behind one registry.

Provenance: Face2Scene (arXiv 2603.16570) §4.1 and Tables 2-4: DISTS, LPIPS, PSNR, SSIM, FID,
MUSIQ, CLIP-IQA, MANIQA, LIQE, TOPIQ; Table 7 and §9.4: the ID score, "for each model output, we
cropped the face region of the super-resolved image and computed the ArcFace cosine similarity
between the GT and restored face". PSNR/SSIM follow the S3Diff evaluation the paper builds on
(pyiqa, Y channel of YCbCr); FID is folder to folder, restored vs GT, as pyiqa computes it.

Each metric wraps an :mod:`inscene.quality` scorer (or, for the ID score, an
:mod:`inscene.faces` embedder) and declares its kind (``FR``, ``NR``, ``SET`` for FID, ``ID``),
its direction, the paper's column label, the variants it is skipped in (LIQE is not reported on
face crops, Table 3), and the convention recorded with every score.

ID score: both faces are embedded at the GT's recorded face (box and 5 landmarks from the
sample's metadata), in the GT and in the prediction, and the cosine of the two normalised
embeddings is the score. ``id_score`` is the paper's (ArcFace, insightface ``antelopev2``);
``id_score_dlib`` is the embedded dlib ResNet, reported in its own column, never in place of the
paper's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inscene.errors import BadInputError, MissingWeightsError

__all__ = [
    "DEFAULT_METRICS",
    "EMBEDDED_METRICS",
    "METRICS",
    "PAPER_METRICS",
    "MetricSpec",
    "MetricStatus",
    "check_metric",
    "get_metric",
    "list_metrics",
    "register_metric",
]

Kind = Literal["FR", "NR", "SET", "ID"]


@dataclass(frozen=True)
class MetricSpec:
    """One leaderboard column.

    Attributes:
        name: column id (``psnr``, ``clipiqa``, ``id_score``...).
        label: the paper's header (``PSNR``, ``C-IQA``...).
        kind: ``FR`` (needs GT), ``NR``, ``SET`` (one value per image set: FID) or ``ID``.
        lower_better: direction.
        scorer: :mod:`inscene.quality` scorer name (FR/NR/SET).
        embedder: :mod:`inscene.faces` embedder name (ID).
        paper: one of the paper's reported metrics.
        skip_variants: variants where the metric is not computed (as in the paper).
        digits: decimals shown (as in the paper's tables).
        convention: how it is computed, recorded with every score.
        scorer_opts: options for the scorer.
    """

    name: str
    label: str
    kind: Kind
    lower_better: bool
    scorer: str | None = None
    embedder: str | None = None
    paper: bool = True
    skip_variants: tuple[str, ...] = ()
    digits: int = 4
    convention: str = ""
    scorer_opts: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_better else "↑"

    @property
    def needs_gt(self) -> bool:
        return self.kind in ("FR", "SET", "ID")

    @property
    def set_level(self) -> bool:
        return self.kind == "SET"


_Y = "Y channel of BT.601 YCbCr, pyiqa formula (test_y_channel=True, color_space='ycbcr'), as in S3Diff"

METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec("dists", "DISTS", "FR", True, scorer="dists", convention="pyiqa dists"),
        MetricSpec("lpips", "LPIPS", "FR", True, scorer="lpips", convention="pyiqa lpips (AlexNet, v0.1)"),
        MetricSpec("psnr", "PSNR", "FR", False, scorer="psnr", convention=_Y),
        MetricSpec("ssim", "SSIM", "FR", False, scorer="ssim", convention=_Y + "; 8-bit rounded, 11x11 Gaussian"),
        MetricSpec("fid", "FID", "SET", True, scorer="fid", digits=2,
                   convention="pyiqa fid, clean mode, restored set vs GT set"),
        MetricSpec("musiq", "MUSIQ", "NR", False, scorer="musiq", convention="pyiqa musiq (KonIQ-10k)"),
        MetricSpec("clipiqa", "C-IQA", "NR", False, scorer="clipiqa", convention="pyiqa clipiqa (RN50)"),
        MetricSpec("maniqa", "M-IQA", "NR", False, scorer="maniqa", convention="pyiqa maniqa (KonIQ-10k)"),
        MetricSpec("liqe", "LIQE", "NR", False, scorer="liqe", skip_variants=("face-only",),
                   convention="pyiqa liqe (KonIQ-10k); not on face crops (Table 3)"),
        MetricSpec("topiq", "TOPIQ", "NR", False, scorer="topiq_nr", convention="pyiqa topiq_nr (KonIQ-10k)"),
        MetricSpec("id_score", "ID", "ID", False, embedder="arcface",
                   skip_variants=("face-only", "gt-face-inserted"),
                   convention="ArcFace (insightface antelopev2) cosine, GT face vs restored face at the GT's "
                   "recorded face (Table 7)"),
        MetricSpec("id_score_dlib", "ID (dlib)", "ID", False, embedder="dlib", paper=False,
                   skip_variants=("face-only", "gt-face-inserted"),
                   convention="embedded dlib ResNet cosine, GT face vs restored face at the GT's recorded face "
                   "(not the paper's ArcFace)"),
        MetricSpec("piqe", "PIQE", "NR", True, scorer="piqe", paper=False, digits=2,
                   convention="pyiqa piqe (weight-free)"),
        MetricSpec("psnr_rgb", "PSNR (RGB)", "FR", False, scorer="psnr-rgb", paper=False,
                   convention="RGB channels, pyiqa formula"),
        MetricSpec("ssim_rgb", "SSIM (RGB)", "FR", False, scorer="ssim-rgb", paper=False,
                   convention="RGB channels, pyiqa formula (pyiqa 'ssimc')"),
    )
}

#: The paper's ten, in the order of Table 2.
PAPER_METRICS = ("dists", "lpips", "psnr", "ssim", "fid", "musiq", "clipiqa", "maniqa", "liqe", "topiq")
#: What ``inscene evaluate`` computes by default: the paper's ten, the ID score, and the embedded
#: extras that work offline (a learned metric without weights is reported ``n/a``).
DEFAULT_METRICS = (*PAPER_METRICS, "id_score", "id_score_dlib", "piqe")
#: Weight-free metrics (what an offline machine computes).
EMBEDDED_METRICS = ("psnr", "ssim", "piqe", "id_score_dlib")


def list_metrics() -> list[str]:
    """Registered metric names (paper order first)."""
    return list(METRICS)


def register_metric(spec: MetricSpec) -> None:
    """Add (or replace) a metric."""
    METRICS[spec.name] = spec


def get_metric(name: str) -> MetricSpec:
    """The metric ``name``: its id or its printed label, in any case (``psnr``, ``PSNR``, ``C-IQA``)."""
    if name in METRICS:
        return METRICS[name]
    key = name.strip().casefold()
    for spec in METRICS.values():
        if key in (spec.name.casefold(), spec.label.casefold()):
            return spec
    raise BadInputError(f"unknown metric '{name}'; known: {', '.join(METRICS)}")


@dataclass
class MetricStatus:
    """Whether a metric can run here, and what it is (checked on the driver before scoring)."""

    name: str
    ok: bool
    version: str = ""
    backend: str = ""
    reason: str = ""
    describe: dict[str, Any] = field(default_factory=dict)


def check_metric(
    spec: MetricSpec, *, pretrained: bool = True, device: str | None = None, batch_size: int = 8
) -> MetricStatus:
    """Create the metric's backend (light) to learn its version, or why it cannot run.

    Missing weights give ``ok=False`` and ``reason="weights missing: <file>"``.
    """
    try:
        if spec.embedder is not None:
            emb = _embedder(spec.embedder)
            from inscene import weights

            for w in getattr(emb, "weights", ()):
                weights.locate(w)
            version = f"id/1:{emb.backend}:dim={getattr(emb, 'dim', '?')}"
            desc = emb.describe() if hasattr(emb, "describe") else {}
            return MetricStatus(spec.name, True, version, emb.backend, describe=desc)
        scorer = _scorer(spec, pretrained, device, batch_size)
        return MetricStatus(spec.name, True, scorer.version, scorer.backend, describe=scorer.describe())
    except MissingWeightsError as exc:
        return MetricStatus(spec.name, False, reason=f"weights missing: {Path(exc.filename).name}")
    except ImportError as exc:
        return MetricStatus(spec.name, False, reason=f"backend not installed: {exc}")


def _scorer(spec: MetricSpec, pretrained: bool, device: str | None, batch_size: int) -> Any:
    from inscene.quality import create_scorer, get_scorer_info

    assert spec.scorer is not None
    opts = dict(spec.scorer_opts)
    if get_scorer_info(spec.scorer).weights:
        opts["pretrained"] = pretrained
    return create_scorer(spec.scorer, device=device, batch_size=batch_size, **opts)


@functools.lru_cache(maxsize=8)
def _embedder(name: str) -> Any:
    try:
        from inscene.faces import create_embedder
    except ImportError as exc:  # the faces module is another issue's; say so plainly
        raise ImportError(f"inscene.faces is not available ({exc})") from exc
    return create_embedder(name)


# --------------------------------------------------------------------------------------------
# Computing (on workers)


class ScoringError(Exception):
    """A metric that failed on one image (recorded as that row's ``error``)."""


def score_images(
    spec: MetricSpec,
    preds: list[np.ndarray],
    refs: list[np.ndarray | None],
    *,
    pretrained: bool = True,
    device: str | None = None,
    batch_size: int = 8,
) -> list[float | Exception]:
    """Score HxWx3 uint8 predictions (FR/NR); same-size images are batched together.

    Returns one value or exception per image (a batch that fails is retried image by image, so
    one bad image never costs the others their scores).
    """
    scorer = _scorer(spec, pretrained, device, batch_size)
    out: list[float | Exception] = [math.nan] * len(preds)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(preds):
        by_shape.setdefault(tuple(p.shape), []).append(i)
    for idx in by_shape.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            try:
                vals = _score_chunk(scorer, spec, [preds[i] for i in chunk], [refs[i] for i in chunk])
                for i, v in zip(chunk, vals, strict=True):
                    out[i] = float(v)
            except Exception:  # noqa: BLE001 - isolate the failing image(s)
                for i in chunk:
                    try:
                        out[i] = float(_score_chunk(scorer, spec, [preds[i]], [refs[i]])[0])
                    except Exception as exc:  # noqa: BLE001
                        out[i] = exc
    return out


def _score_chunk(scorer: Any, spec: MetricSpec, preds: list[np.ndarray], refs: list[np.ndarray | None]) -> np.ndarray:
    from inscene.quality import as_batch

    x = as_batch(np.stack(preds))
    if spec.kind == "FR":
        if any(r is None for r in refs):
            raise ScoringError("no ground truth")
        return scorer.score(x, as_batch(np.stack(refs)))  # type: ignore[arg-type]
    return scorer.score(x)


def image_features(
    spec: MetricSpec, images: list[np.ndarray], *, pretrained: bool = True, device: str | None = None,
    batch_size: int = 8,
) -> list[np.ndarray | Exception]:
    """Per-image FID features (float32), one array or exception per image (any sizes)."""
    from inscene.quality import as_batch

    scorer = _scorer(spec, pretrained, device, batch_size)
    try:
        feats = scorer.features([as_batch(im)[0] for im in images])
        return [f.astype(np.float32) for f in feats]
    except Exception:  # noqa: BLE001 - isolate the failing image(s)
        out: list[np.ndarray | Exception] = []
        for im in images:
            try:
                out.append(scorer.features(as_batch(im))[0].astype(np.float32))
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


def id_similarity(spec: MetricSpec, pred: np.ndarray, gt: np.ndarray, face: Any) -> float:
    """Cosine similarity of the embeddings of the GT face and the restored face (same geometry)."""
    assert spec.embedder is not None
    emb = _embedder(spec.embedder)
    a = np.asarray(emb.embed(gt, face), np.float64).reshape(-1)
    b = np.asarray(emb.embed(pred, face), np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ScoringError("zero embedding")
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def fid_from_features(features_pred: np.ndarray, features_gt: np.ndarray) -> float:
    """FID between two per-image feature sets (pyiqa's Fréchet distance)."""
    from inscene.quality import FIDScorer

    return FIDScorer.distance(features_pred, features_gt)
