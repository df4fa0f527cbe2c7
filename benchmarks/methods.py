"""Restoration methods the evaluator can score, behind one registry.

Provenance: Face2Scene (arXiv 2603.16570) §4.1-4.2: methods are compared on the InScene splits by
their full-resolution outputs. Baselines here are the degraded input and interpolation:

* ``lq``: the degraded input itself, brought to the GT size by pixel replication (nearest
  neighbour), i.e. what a viewer of the input sees; unchanged when it is already at GT size.
* ``bicubic`` / ``lanczos``: Pillow bicubic / Lanczos upsampling of the LQ to the GT size (equal to
  ``lq`` when the LQ is already at GT size, as in S3Diff-style pipelines that upsample the LQ first).
* ``external``: a folder of predictions named by sample key (``KEY.png``, ``.jpg``, ...): how
  outputs of S3Diff, OSEDiff, SUPIR and the like are scored. Every missing, extra, duplicate,
  wrongly sized or corrupt file is named per key; nothing is resized to fit.
* ``face2scene``: the bundled restorer from a trained checkpoint (``--checkpoint``), in
  :mod:`benchmarks.face2scene`, which imports the restorer wing lazily.

A method turns a decoded :class:`~benchmarks.splits.EvalSample` into an ``HxWx3`` uint8 RGB
prediction and gives each prediction a content hash (the cache key of its scores): the file's
sha256 for external predictions, and for generated ones a hash of the method, its version and the
sha256 of its inputs, so cached scores are found without decoding anything.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from benchmarks.splits import IMAGE_SUFFIXES, EvalSample, Problem, SampleRef, list_images
from inscene.errors import BadInputError

__all__ = [
    "ExternalMethod",
    "Method",
    "PredictionError",
    "ResizeMethod",
    "create_method",
    "list_methods",
    "register_method",
]


class PredictionError(Exception):
    """A prediction that cannot be produced or read for one sample (a :class:`Problem`)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class Method:
    """Base class. Subclasses set ``name``/``description`` and implement :meth:`predict`.

    Attributes:
        name: the row label in the leaderboard.
        needs_lq: the method reads the LQ input (external predictions do not).
        cache_outputs: store predictions under the results folder, keyed by their hash, so an
            expensive method never runs twice on the same input.
        uses_gpu: its predictions want a GPU: on a cluster with GPU workers the evaluator then
            schedules every scoring partition with the ``GPU`` resource.
    """

    name: str = ""
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    needs_lq: ClassVar[bool] = True
    cache_outputs: ClassVar[bool] = False
    uses_gpu: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.version, "description": self.description}

    def preflight(self) -> None:
        """Raise (one line, e.g. missing weights) before any sample is scored; default: nothing to check."""

    def check(self, refs: list[SampleRef]) -> list[Problem]:
        """Problems visible before any decoding (e.g. missing prediction files)."""
        return []

    def prediction_hash(self, ref: SampleRef) -> str | None:
        """Content hash of this method's prediction for ``ref`` (None: no prediction)."""
        if self.needs_lq and not ref.lq_hash:
            return None
        payload = json.dumps([self.kind, self.name, self.version, ref.lq_hash, ref.gt_hash, self._hash_extra()])
        return "gen-" + hashlib.sha256(payload.encode()).hexdigest()

    def _hash_extra(self) -> Any:
        return None

    def predict(self, sample: EvalSample) -> np.ndarray:
        """The restored image, HxWx3 uint8 RGB (raises :class:`PredictionError`)."""
        raise NotImplementedError


def _target_shape(sample: EvalSample, scale: float | None) -> tuple[int, int]:
    if scale is not None:
        assert sample.lq is not None
        return round(sample.lq.shape[0] * scale), round(sample.lq.shape[1] * scale)
    shape = sample.target_shape
    if shape is not None:
        return shape
    assert sample.lq is not None
    return int(sample.lq.shape[0]), int(sample.lq.shape[1])


class ResizeMethod(Method):
    """The LQ resized to the target size (the GT's; else the recorded size; else ``scale`` x LQ).

    Args:
        name: row label (default: the registry name).
        scale: resize by this factor instead of to the GT size (splits without GT).
    """

    kind = "resize"
    filter: ClassVar[str] = "bicubic"

    def __init__(self, name: str | None = None, scale: float | None = None) -> None:
        self.name = name or self.registry_name
        if scale is not None and scale <= 0:
            raise BadInputError(f"scale must be positive, got {scale}")
        self.scale = scale

    registry_name: ClassVar[str] = ""

    def _hash_extra(self) -> Any:
        return [self.filter, self.scale]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "filter": self.filter, "scale": self.scale}

    def predict(self, sample: EvalSample) -> np.ndarray:
        from PIL import Image

        if sample.lq is None:
            raise PredictionError("no-lq", "the sample has no LQ input")
        h, w = _target_shape(sample, self.scale)
        if (h, w) == sample.lq.shape[:2]:
            return sample.lq
        resample = {"nearest": Image.NEAREST, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}[self.filter]
        return np.asarray(Image.fromarray(sample.lq).resize((w, h), resample=resample))


class LQMethod(ResizeMethod):
    registry_name = "lq"
    filter = "nearest"
    description = "the degraded input, at the GT size by pixel replication (nearest neighbour)"


class BicubicMethod(ResizeMethod):
    registry_name = "bicubic"
    filter = "bicubic"
    description = "bicubic upsampling of the LQ to the GT size (Pillow)"


class LanczosMethod(ResizeMethod):
    registry_name = "lanczos"
    filter = "lanczos"
    description = "Lanczos upsampling of the LQ to the GT size (Pillow)"


class ExternalMethod(Method):
    """Predictions from a folder, one image per sample key (any of png/jpg/jpeg/webp/bmp/tif).

    Args:
        predictions: the folder.
        name: row label (e.g. ``S3Diff``); default ``external``.
        hash_memo: optional :class:`benchmarks.cache.HashMemo` (skips re-hashing unchanged files).
    """

    kind = "external"
    description = "predictions read from a folder, named by sample key"
    needs_lq = False

    def __init__(self, predictions: str | os.PathLike, name: str = "external", hash_memo: Any = None) -> None:
        self.predictions = Path(predictions)
        if not self.predictions.is_dir():
            raise BadInputError(f"--predictions: not a folder: {self.predictions}")
        self.name = name
        self.hash_memo = hash_memo
        self._files, self._dupes, self._others = list_images(self.predictions)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["hash_memo"] = None  # workers never hash: the driver did
        return state

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "predictions": str(self.predictions)}

    def check(self, refs: list[SampleRef]) -> list[Problem]:
        keys = {r.key for r in refs}
        problems = list(self._dupes)
        for r in refs:
            if r.key not in self._files:
                problems.append(
                    Problem(r.key, "missing", f"no prediction {r.key}.* in {self.predictions}")
                )
        for stem, path in sorted(self._files.items()):
            if stem not in keys:
                problems.append(Problem(stem, "extra", f"{path.name} matches no sample of this split"))
        for path in self._others:
            problems.append(
                Problem(path.stem, "extra", f"{path.name} is not an image ({', '.join(IMAGE_SUFFIXES)})")
            )
        return problems

    def path(self, key: str) -> Path | None:
        return self._files.get(key)

    def prediction_hash(self, ref: SampleRef) -> str | None:
        path = self._files.get(ref.key)
        if path is None:
            return None
        if self.hash_memo is not None:
            return self.hash_memo.sha256(path)
        from benchmarks.cache import file_sha256

        return file_sha256(path)

    def predict(self, sample: EvalSample) -> np.ndarray:
        from inscene.imageio import decode_image

        path = self._files.get(sample.key)
        if path is None:
            raise PredictionError("missing", f"no prediction {sample.key}.* in {self.predictions}")
        try:
            return decode_image(path)
        except Exception as exc:  # noqa: BLE001 - any decode failure is this file's problem
            raise PredictionError("corrupt", f"{path.name}: {exc}") from None


class Face2SceneHook(Method):
    """The bundled Face2Scene restorer (§3), provided by the restorer wing.

    Resolved lazily to :class:`benchmarks.face2scene.Face2SceneMethod` (``predict(sample) -> HxWx3
    uint8``; ``cache_outputs = True``), so listing methods imports nothing of the restorer.
    """

    kind = "face2scene"
    description = "the bundled Face2Scene restorer (restorer wing)"
    target = "benchmarks.face2scene:Face2SceneMethod"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        module, _, attr = cls.target.partition(":")
        try:
            impl = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            raise BadInputError(
                "method 'face2scene' is not available yet: the Face2Scene restorer (restorer/) does "
                f"not provide {module}.{attr}; meanwhile score its outputs with "
                "--method Face2Scene --predictions DIR"
            ) from None
        return impl(*args, **kwargs)


_METHODS: dict[str, type[Method] | str] = {
    "lq": LQMethod,
    "bicubic": BicubicMethod,
    "lanczos": LanczosMethod,
    "external": ExternalMethod,
    "face2scene": Face2SceneHook,
}


def list_methods() -> list[str]:
    """Registered method names."""
    return list(_METHODS)


def register_method(name: str, target: type[Method] | str) -> None:
    """Add a method class (or ``"module:Class"``) under ``name``."""
    _METHODS[name] = target


def create_method(name: str, **opts: Any) -> Method:
    """A method by registry name; ``opts`` go to its constructor.

    Raises:
        BadInputError: unknown name, bad options, or a method not available yet.
    """
    if name not in _METHODS:
        raise BadInputError(
            f"unknown method '{name}'; known: {', '.join(list_methods())} "
            "(or any name with --predictions DIR)"
        )
    target = _METHODS[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    try:
        return target(**opts)  # type: ignore[operator]
    except TypeError as exc:
        raise BadInputError(f"method '{name}': {exc}") from exc
