"""The bundled Face2Scene restorer as an evaluation method (``inscene evaluate --method face2scene``).

Provenance: Face2Scene (arXiv 2603.16570) §4.1-4.2: the restorer is scored on the InScene splits by
its full-resolution outputs, like every other method.

The evaluation wing reaches the restorer wing only here, through the methods registry
(:data:`benchmarks.methods._METHODS` ``face2scene``), importing it lazily: nothing of the restorer
(torch, diffusers) loads until a prediction is needed, and then once per worker process
(:func:`inscene.runtime.cached_backend`). Predictions are cached by the evaluator under a hash of
the LQ (and GT) content and of everything the output depends on: the checkpoint's sha256, the base
model, Ref-FR, references folder, detector, CFG scale and dtype.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, ClassVar

import numpy as np

from benchmarks.methods import Method, PredictionError
from benchmarks.splits import EvalSample
from inscene.errors import BadInputError, InsceneError

__all__ = ["Face2SceneMethod"]


class Face2SceneMethod(Method):
    """A trained Face2Scene checkpoint run on each sample's LQ (Stage I + FaDeX + MapNet + SD-Turbo).

    Args:
        checkpoint: the restorer checkpoint (``.safetensors`` or training run folder).
        name: row label (default ``face2scene``).
        refs: identity references: a folder with one sub-folder per ``identity_id`` (or photos of
            one person); Stage I's Ref-FR uses them (FaceMe needs them).
        ref_fr: ``faceme`` (the paper's), ``gt`` (uses the sample's GT face: an oracle, not a
            method result) or ``passthrough``.
        ref_fr_path: the FaceMe checkout.
        base: SD-Turbo folder (default: the checkpoint's, else ``inscene weights``).
        detector: face detector for Stage I (default: ``faces.detector``).
        device: ``auto``, ``cpu``, ``cuda``...
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``.
        cfg: guidance scale (default: the checkpoint's, 1.10).

    Raises:
        BadInputError: no checkpoint given, or it does not exist.
    """

    kind = "face2scene"
    description = "the bundled Face2Scene restorer (restorer wing), from a trained checkpoint"
    version = "1"
    cache_outputs: ClassVar[bool] = True

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | None = None,
        name: str = "face2scene",
        refs: str | os.PathLike[str] | None = None,
        ref_fr: str = "faceme",
        ref_fr_path: str | os.PathLike[str] | None = None,
        base: str | None = None,
        detector: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        cfg: float | str | None = None,
    ) -> None:
        if checkpoint is None:
            raise BadInputError("method 'face2scene' needs --checkpoint (a trained restorer, `inscene train restorer`)")
        from restorer.model import find_checkpoint

        self.checkpoint = find_checkpoint(checkpoint)
        self.name = name
        self.refs = str(refs) if refs is not None else None
        self.ref_fr = ref_fr
        self.ref_fr_path = str(ref_fr_path) if ref_fr_path is not None else None
        self.base = base
        self.detector = detector
        self.device = device
        self.dtype = dtype
        self.cfg = float(cfg) if cfg is not None else None
        self._digest: str | None = None

    @property
    def uses_gpu(self) -> bool:  # type: ignore[override]
        """One-step SD-Turbo wants a GPU unless the user pinned the CPU."""
        return self.device != "cpu"

    def _checkpoint_sha256(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            with open(self.checkpoint, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._digest = h.hexdigest()
        return self._digest

    def _hash_extra(self) -> Any:
        return [self._checkpoint_sha256(), self.base, self.ref_fr, self.refs, self.detector, self.cfg, self.dtype]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "checkpoint": str(self.checkpoint), "checkpoint_sha256": self._checkpoint_sha256(),
            "base": self.base, "ref_fr": self.ref_fr, "refs": self.refs, "detector": self.detector,
            "cfg": self.cfg, "dtype": self.dtype,
        }

    def preflight(self) -> None:
        """Before any sample is scored: the checkpoint, the SD-Turbo base, the Ref-FR backend's
        weights (the FaceMe checkout) and references are checked as ``inscene restore`` checks them
        (:func:`restorer.restore.preflight`), so a missing one stops the run in one line.

        Raises:
            BadInputError, MissingWeightsError: what is missing.
        """
        from restorer.restore import preflight

        preflight(self.checkpoint, kind="dataset", refs=self.refs, base=self.base, ref_fr=self.ref_fr,
                  ref_fr_path=self.ref_fr_path)

    def _model(self) -> Any:
        from inscene.runtime import cached_backend
        from restorer.restore import load_restorer

        key = f"face2scene:{self._checkpoint_sha256()}:{self.base}:{self.ref_fr}:{self.ref_fr_path}:" \
              f"{self.detector}:{self.device}:{self.dtype}:{self.cfg}"
        return cached_backend(key, lambda: load_restorer(
            self.checkpoint, base=self.base, ref_fr=self.ref_fr, ref_fr_path=self.ref_fr_path,
            detector=self.detector, device=self.device, dtype=self.dtype, cfg_scale=self.cfg,
        ))

    def _references(self) -> Any:
        from inscene.runtime import cached_backend
        from restorer.restore import ReferenceStore

        return cached_backend(f"face2scene-refs:{self.refs}", lambda: ReferenceStore(self.refs))

    def predict(self, sample: EvalSample) -> np.ndarray:
        if sample.lq is None:
            raise PredictionError("no-lq", "the sample has no LQ input")
        identity = sample.meta.get("identity_id") or None
        try:
            model = self._model()
            refs = self._references().get(identity)
            gt = sample.gt if self.ref_fr == "gt" else None
            res = model.restore(sample.lq, refs, size=sample.target_shape, ground_truth=gt, identity=identity)
        except InsceneError as exc:
            raise PredictionError("error", f"face2scene: {exc}") from None
        return res.image
