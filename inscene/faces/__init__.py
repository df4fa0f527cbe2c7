"""Faces: detectors, landmarks, identity embedders, canonical alignment and paste-back.

Registries (DESIGN.md "Backends by name")::

    from inscene.faces import create_detector, create_embedder
    det = create_detector("dlib")            # embedded default; "insightface", "yolo-face"
    faces = det.detect(rgb)                  # list[inscene.schema.Face]
    emb = create_embedder("dlib")            # or "arcface" (the paper's, §6.1)
    sim = emb.similarity(emb.embed(rgb, faces[0]), reference_embeddings)

Creating a backend loads nothing heavy; models load once per process on first use
(:func:`inscene.runtime.cached_backend`). A paper backend whose weights are missing raises
:class:`inscene.errors.MissingWeightsError` naming the file, where it looked and the fetch command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from inscene.errors import BadInputError

if TYPE_CHECKING:
    from inscene.faces.detectors import FaceDetector
    from inscene.faces.embedders import FaceEmbedder

__all__ = [
    "create_detector",
    "list_detectors",
    "register_detector",
    "create_embedder",
    "list_embedders",
    "register_embedder",
]

_DETECTORS: dict[str, str] = {
    "dlib": "inscene.faces.detectors:DlibDetector",
    "insightface": "inscene.faces.detectors:InsightfaceDetector",
    "yolo-face": "inscene.faces.detectors:YoloFaceDetector",
}
_EMBEDDERS: dict[str, str] = {
    "dlib": "inscene.faces.embedders:DlibEmbedder",
    "arcface": "inscene.faces.embedders:ArcFaceEmbedder",
}


def _resolve(target: str | type) -> type:
    if isinstance(target, type):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _create(kind: str, registry: dict[str, str], name: str, opts: dict[str, Any]):
    if name not in registry:
        raise BadInputError(f"unknown {kind} '{name}'; known: {', '.join(sorted(registry))}")
    cls = _resolve(registry[name])
    try:
        return cls(**opts)
    except TypeError as exc:  # an option the backend does not take
        raise BadInputError(f"{kind} '{name}': {exc}") from exc


def create_detector(name: str, **opts: Any) -> FaceDetector:
    """A face detector by name (see :func:`list_detectors`); ``opts`` go to its constructor."""
    return _create("detector", _DETECTORS, name, opts)


def list_detectors() -> list[str]:
    """Registered detector names."""
    return sorted(_DETECTORS)


def register_detector(name: str, target: str | type) -> None:
    """Add a detector class (or ``"module:Class"``) under ``name``."""
    _DETECTORS[name] = target  # type: ignore[assignment]


def create_embedder(name: str, **opts: Any) -> FaceEmbedder:
    """An identity embedder by name (see :func:`list_embedders`)."""
    return _create("embedder", _EMBEDDERS, name, opts)


def list_embedders() -> list[str]:
    """Registered embedder names."""
    return sorted(_EMBEDDERS)


def register_embedder(name: str, target: str | type) -> None:
    """Add an embedder class (or ``"module:Class"``) under ``name``."""
    _EMBEDDERS[name] = target  # type: ignore[assignment]
