"""``inscene analyze fadex``: the FaDeX cosine-similarity experiment of Figure 3 (Face2Scene §7.4).

The four fixed presets d1–d4 (:mod:`inscene.degradations.presets`) are applied to ``count`` clean
images (10 in the paper); each (clean, degraded) pair is embedded by FaDeX, and cosine similarities
are collected between

* **different images under the same degradation** (content should not matter: high), and
* **the same image under different degradations** (the degradation should: low).

The figure shows the mean ± std of both groups, and the 4x4 matrix of mean similarities between
presets (its diagonal is the first group). The gap (same-degradation mean − same-image mean) is the
experiment's one-number summary.

Input handling (the paper does not say how its images were sized): each image's shorter side is
resized to ``size`` (area) and its centre ``size`` x ``size`` square taken, then degraded; the pair
is (that square, its degraded version). Embeddings are the unit-normalised projections q (the space
Eq. 1 trains); ``space="z"`` uses GAP(Z_face) instead.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inscene.errors import BadInputError

__all__ = ["Figure3Result", "clean_square", "embed_pairs", "figure3", "similarity_groups"]

PRESETS = ("d1", "d2", "d3", "d4")
_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


@dataclass
class Figure3Result:
    """Numbers behind the figure.

    Attributes:
        images: the image files used.
        presets: preset names.
        same_degradation: (mean, std) cosine of different images under one preset.
        same_image: (mean, std) cosine of one image under different presets.
        gap: ``same_degradation[0] - same_image[0]``.
        matrix: mean cosine between presets (rows/cols = presets; diagonal: different images).
        per_preset: mean same-degradation cosine per preset.
        space: ``q`` or ``z``.
    """

    images: list[str]
    presets: list[str]
    same_degradation: tuple[float, float]
    same_image: tuple[float, float]
    gap: float
    matrix: list[list[float]]
    per_preset: dict[str, float] = field(default_factory=dict)
    space: str = "q"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)

    def summary(self) -> str:
        """Three lines for a terminal."""
        sd, si = self.same_degradation, self.same_image
        return (
            f"FaDeX Figure 3 ({len(self.images)} images x {', '.join(self.presets)}, space {self.space}):\n"
            f"same degradation, different images: {sd[0]:.3f} ± {sd[1]:.3f}\n"
            f"same image, different degradations: {si[0]:.3f} ± {si[1]:.3f}\n"
            f"gap = {self.gap:.3f}"
        )


def clean_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shorter side resized to ``size`` (area / cubic), then the centre square."""
    import cv2

    h, w = rgb.shape[:2]
    s = size / min(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    img = cv2.resize(rgb, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else rgb
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size])


def list_images(folder: Path, count: int) -> list[Path]:
    """The first ``count`` image files of ``folder`` (sorted, recursive)."""
    if not Path(folder).is_dir():
        raise BadInputError(f"not a folder: {folder}")
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if len(files) < 2:
        raise BadInputError(f"Figure 3 needs at least 2 images, found {len(files)} in {folder}")
    return files[:count]


def embed_pairs(model: Any, pairs: list[tuple[np.ndarray, np.ndarray]], space: str = "q", batch: int = 8) -> np.ndarray:
    """Unit-normalised embeddings (N, d) of (x_hq, x_lq) pairs of equal size."""
    import torch
    import torch.nn.functional as F

    from restorer.fadex import pair_tensor

    if space not in ("q", "z"):
        raise BadInputError(f"space must be 'q' or 'z', got {space!r}")
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch):
            x = torch.cat([pair_tensor(h, lq) for h, lq in pairs[i : i + batch]])
            enc = model.encode(x)
            v = enc.q if space == "q" else F.normalize(enc.z, dim=1)
            out.append(v.cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def similarity_groups(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From embeddings (P presets, N images, d), the same-degradation cosines, the same-image
    cosines, and the (P, P) matrix of mean cosines (diagonal over different images)."""
    p, n, _ = emb.shape
    e = emb / np.linalg.norm(emb, axis=2, keepdims=True)
    same_deg = [float(e[d, i] @ e[d, j]) for d in range(p) for i, j in itertools.combinations(range(n), 2)]
    same_img = [float(e[a, i] @ e[b, i]) for i in range(n) for a, b in itertools.combinations(range(p), 2)]
    mat = np.zeros((p, p))
    for a in range(p):
        for b in range(p):
            if a == b:
                mat[a, b] = np.mean([e[a, i] @ e[a, j] for i, j in itertools.combinations(range(n), 2)])
            else:
                mat[a, b] = np.mean([e[a, i] @ e[b, i] for i in range(n)])
    return np.array(same_deg), np.array(same_img), mat


def _plot(result: Figure3Result, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1, 1.1]})
    means = [result.same_degradation[0], result.same_image[0]]
    stds = [result.same_degradation[1], result.same_image[1]]
    ax1.bar([0, 1], means, yerr=stds, capsize=8, color=["#3b7dd8", "#d8833b"], width=0.6)
    ax1.set_xticks([0, 1], ["same degradation\n(different images)", "same image\n(different degradations)"])
    ax1.set_ylabel("cosine similarity")
    ax1.set_ylim(min(-0.2, min(m - s for m, s in zip(means, stds, strict=True)) - 0.05), 1.2)
    ax1.axhline(0, color="black", linewidth=0.6)
    for x, (m, s) in enumerate(zip(means, stds, strict=True)):
        ax1.text(x + 0.05, m + 0.02, f"{m:.2f} ± {s:.2f}", ha="left", va="bottom", fontsize=9)
    ax1.set_title(f"FaDeX embeddings, {len(result.images)} images (gap {result.gap:.2f})")
    mat = np.array(result.matrix)
    im = ax2.imshow(mat, vmin=-1, vmax=1, cmap="coolwarm")
    ax2.set_xticks(range(len(result.presets)), result.presets)
    ax2.set_yticks(range(len(result.presets)), result.presets)
    for a in range(mat.shape[0]):
        for b in range(mat.shape[1]):
            ax2.text(b, a, f"{mat[a, b]:.2f}", ha="center", va="center", fontsize=9)
    ax2.set_title("mean cosine between presets\n(diagonal: different images, same preset)")
    fig.colorbar(im, ax=ax2, fraction=0.046)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def figure3(
    checkpoint: str | Path | Any,
    images: str | Path | list[np.ndarray],
    out: str | Path | None,
    *,
    count: int = 10,
    size: int = 256,
    seed: int = 0,
    space: str = "q",
    presets: tuple[str, ...] = PRESETS,
) -> Figure3Result:
    """Run the Figure-3 experiment.

    Args:
        checkpoint: a FaDeX checkpoint (folder or ``.safetensors``) or a :class:`~restorer.fadex.FaDeX`.
        images: a folder of clean images (the first ``count``, sorted) or a list of RGB arrays.
        out: the PNG to write (None: no figure).
        count: images used (paper: 10).
        size: side of the clean square each image is reduced to.
        seed: unused by the fixed presets (their noise seeds are fixed, §7.4); kept for the record.
        space: ``q`` (projection) or ``z`` (GAP of Z_face).
        presets: preset names.
    """
    from inscene.degradations import apply, preset
    from inscene.imageio import decode_image
    from restorer.fadex import FaDeX

    del seed  # the presets are deterministic operators
    if size < 16:
        raise BadInputError(f"size must be >= 16 px, got {size}")
    model = checkpoint if isinstance(checkpoint, FaDeX) else FaDeX.from_pretrained(checkpoint)
    if isinstance(images, (str, Path)):
        files = list_images(Path(images), count)
        names = [str(f) for f in files]
        clean = [clean_square(decode_image(f), size) for f in files]
    else:
        clean = [clean_square(np.asarray(a), size) for a in images[:count]]
        names = [f"image{i}" for i in range(len(clean))]
        if len(clean) < 2:
            raise BadInputError("Figure 3 needs at least 2 images")
    ops = [preset(p) for p in presets]
    emb = []
    for op in ops:
        lqs = apply(clean, op)
        emb.append(embed_pairs(model, list(zip(clean, lqs, strict=True)), space))
    e = np.stack(emb)
    same_deg, same_img, mat = similarity_groups(e)
    sd = (float(same_deg.mean()), float(same_deg.std()))
    si = (float(same_img.mean()), float(same_img.std()))
    result = Figure3Result(
        images=names, presets=list(presets), same_degradation=sd, same_image=si, gap=sd[0] - si[0],
        matrix=mat.round(4).tolist(), per_preset={p: float(mat[i, i]) for i, p in enumerate(presets)}, space=space,
    )
    if out is not None:
        _plot(result, Path(out))
    return result
