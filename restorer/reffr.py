"""Reference-based face restoration (Ref-FR) backends for Stage I (Face2Scene §3.1, §3.2, §7.3).

Every backend works in the canonical frame: it takes a batch of aligned ``size`` x ``size`` LQ face
crops, each with its aligned identity references (and, where known, its aligned ground-truth crop),
and returns one restored aligned crop per input. Stage I (:mod:`restorer.stage1`) does the
alignment before and the exact inverse warp after.

Backends (registry, DESIGN.md "Backends by name")::

    from restorer.reffr import create_ref_fr
    fr = create_ref_fr("gt")                  # "faceme" (the paper's), "gt", "passthrough"
    restored = fr.restore(RefFRBatch(lq=[crop], references=[[]], ground_truth=[gt_crop]))

- ``faceme``: FaceMe (Liu et al., AAAI 2025), the paper's choice (§4.1, §7.3). No weights ship with
  inscene and none can be downloaded by it: see :class:`FaceMeRefFR` for the exact set-up.
- ``gt``: the ground-truth aligned crop is the "restoration": the paper's extra training pairs with
  the GT face as x_HQ (§3.2) and the non-reference subset (§4.1).
- ``passthrough``: HQ = LQ (an ablation: FaDeX then sees no degradation signal).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inscene.errors import BadInputError, InsceneError, MissingWeightsError

__all__ = [
    "RefFR",
    "RefFRBatch",
    "FaceMeRefFR",
    "GroundTruthRefFR",
    "PassthroughRefFR",
    "create_ref_fr",
    "list_ref_fr",
    "register_ref_fr",
]


@dataclass
class RefFRBatch:
    """Aligned inputs of one Ref-FR call.

    Attributes:
        lq: aligned degraded faces, each ``size`` x ``size`` x 3 uint8 RGB.
        references: per face, its aligned identity references (same format; may be empty).
        ground_truth: per face, the aligned GT crop (``None`` where unknown).
        identities: per face, an identity id (backends that batch per identity use it).
    """

    lq: list[np.ndarray]
    references: list[list[np.ndarray]] = field(default_factory=list)
    ground_truth: list[np.ndarray | None] = field(default_factory=list)
    identities: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.lq)
        if not self.references:
            self.references = [[] for _ in range(n)]
        if not self.ground_truth:
            self.ground_truth = [None] * n
        if not self.identities:
            self.identities = [None] * n
        if not (len(self.references) == len(self.ground_truth) == len(self.identities) == n):
            raise BadInputError(
                f"Ref-FR batch: {n} faces but {len(self.references)} reference lists, "
                f"{len(self.ground_truth)} GT crops, {len(self.identities)} identities"
            )
        for i, crop in enumerate(self.lq):
            _check_crop(crop, f"LQ face {i}")

    def __len__(self) -> int:
        return len(self.lq)


def _check_crop(crop: Any, what: str) -> None:
    arr = np.asarray(crop)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] != arr.shape[1] or arr.dtype != np.uint8:
        raise BadInputError(f"{what} must be a square HxWx3 uint8 RGB crop, got {arr.shape} {arr.dtype}")


class RefFR:
    """Base class of Ref-FR backends.

    Attributes:
        name: registry name (recorded as the ``ref_fr`` backend of every pair).
        needs_references: the backend uses identity references (a face without any is skipped).
        needs_ground_truth: the backend needs the aligned GT crop.
        uses_gpu: the backend runs on a GPU (pipeline stages then ask Dask for one).
        band_limited: the output holds no detail finer than the scene's own pixel grid (it was
            resampled from the scene: ``gt``, ``passthrough``). Stage I then samples it back
            without an anti-aliasing prefilter, which makes the round trip near-exact; a real
            Ref-FR output (``faceme``) is prefiltered when it is shrunk back (no aliasing).
    """

    name: ClassVar[str] = ""
    needs_references: ClassVar[bool] = False
    needs_ground_truth: ClassVar[bool] = False
    uses_gpu: ClassVar[bool] = False
    band_limited: ClassVar[bool] = False

    def load(self) -> None:
        """Locate weights / build models (idempotent; called once per worker)."""

    def restore(self, batch: RefFRBatch) -> list[np.ndarray]:
        """Restore every aligned LQ face of ``batch``; returns crops of the same size, uint8 RGB."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Metadata recorded with the pairs."""
        return {
            "name": self.name,
            "needs_references": self.needs_references,
            "needs_ground_truth": self.needs_ground_truth,
            "uses_gpu": self.uses_gpu,
            "band_limited": self.band_limited,
        }


class GroundTruthRefFR(RefFR):
    """x_HQ = the aligned ground-truth crop (§3.2's GT pairs; the non-reference subset)."""

    name = "gt"
    needs_ground_truth = True
    band_limited = True

    def restore(self, batch: RefFRBatch) -> list[np.ndarray]:
        """Return each face's aligned GT crop."""
        out = []
        for i, (lq, gt) in enumerate(zip(batch.lq, batch.ground_truth, strict=True)):
            if gt is None:
                raise BadInputError(f"Ref-FR 'gt' needs the ground-truth image (none given for face {i})")
            _check_crop(gt, f"GT face {i}")
            if gt.shape != lq.shape:
                raise BadInputError(f"GT crop {gt.shape} and LQ crop {lq.shape} differ in size")
            out.append(np.array(gt, dtype=np.uint8, copy=True))
        return out


class PassthroughRefFR(RefFR):
    """x_HQ = x_LQ (ablation: no restoration)."""

    name = "passthrough"
    band_limited = True

    def restore(self, batch: RefFRBatch) -> list[np.ndarray]:
        """Return copies of the LQ crops."""
        return [np.array(lq, dtype=np.uint8, copy=True) for lq in batch.lq]


class FaceMeRefFR(RefFR):
    """FaceMe (Liu et al., "FaceMe: Robust Blind Face Restoration with Personal Identification",
    AAAI 2025), the Ref-FR model the paper uses (§4.1, §7.3), run through its public ``infer.py``.

    inscene never imports FaceMe's code into its own process and never downloads anything for it:
    the adapter writes the aligned 512x512 LQ crops and the identity's aligned references to a
    temporary folder, runs FaceMe's own ``infer.py`` from the user's checkout, in the user's FaceMe
    Python environment, as a separate process (one call per identity, since ``infer.py`` takes one
    reference folder for all inputs), and reads the results back (same file names). So FaceMe's
    code IS executed, from the user's checkout, exactly as its README runs it.

    Set-up (once, on a machine with a CUDA GPU: FaceMe's ``infer.py`` hard-codes ``cuda`` and fp16):

    1. ``git clone https://github.com/modyu-liu/FaceMe`` and create its environment
       (``conda create -n faceme python=3.9 && pip install -r requirements.txt``).
    2. Put its checkpoints where its README says: the ControlNet folder (diffusers layout, with
       ``config.json``) in ``<checkout>/weights/controlnet`` and the Mix checkpoint in
       ``<checkout>/weights/mix`` (both from the Hugging Face repo ``thomas2modyu/FaceMe``), and the
       insightface ``antelopev2`` pack (``*.onnx``) in ``<checkout>/models/antelopev2``.
    3. ``infer.py`` also loads the SDXL base ``SG161222/RealVisXL_V3.0`` and PhotoMaker's
       ``photomaker-v1.bin`` (``TencentARC/PhotoMaker``) through the Hugging Face cache: run it once
       online, or pre-populate that cache (``huggingface-cli download ...``) on offline nodes, or pass
       ``base_model=`` a local SDXL folder.
    4. Tell inscene where the checkout is: ``INSCENE_WEIGHTS_FACEME=/path/to/FaceMe`` (or copy it to
       ``$INSCENE_HOME/faceme``, or pass ``--ref-fr-path``), and which Python runs it:
       ``INSCENE_FACEME_PYTHON=/path/to/envs/faceme/bin/python`` (default: this interpreter).

    Without the checkout (or with one missing a file above) :meth:`load` raises a one-line
    :class:`~inscene.errors.MissingWeightsError`.

    Args:
        path: the FaceMe checkout (default: ``inscene weights`` lookup of ``faceme``).
        python: interpreter of the FaceMe environment (default ``$INSCENE_FACEME_PYTHON`` or this one).
        base_model: ``--pretrained_model_name_or_path`` (FaceMe README: ``SG161222/RealVisXL_V3.0``).
        seed: ``--seed`` (FaceMe README: 233).
        color_correction: pass ``--color_correction`` (the README's command does).
        timeout: seconds allowed per ``infer.py`` call.
    """

    name = "faceme"
    needs_references = True
    uses_gpu = True

    #: Files the checkout must hold (relative to it), checked before anything runs.
    REQUIRED = ("infer.py", "weights/controlnet/config.json", "weights/mix", "models/antelopev2")

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        python: str | None = None,
        base_model: str = "SG161222/RealVisXL_V3.0",
        seed: int = 233,
        color_correction: bool = True,
        timeout: float = 3600.0,
    ) -> None:
        self.path = path
        self.python = python or os.environ.get("INSCENE_FACEME_PYTHON") or sys.executable
        self.base_model = base_model
        self.seed = seed
        self.color_correction = color_correction
        self.timeout = timeout
        self._root: Path | None = None

    def load(self) -> Path:
        """Locate and check the checkout; returns its folder (absolute).

        Raises:
            MissingWeightsError: no checkout found, or it lacks one of :attr:`REQUIRED`.
        """
        if self._root is not None:
            return self._root
        from inscene import weights as W

        # Absolute: infer.py is run with the checkout as working directory, so a relative path
        # (``--ref-fr-path FaceMe``) would be applied twice.
        root = Path(W.locate("faceme", self.path)).resolve()
        spec = W.get_spec("faceme")
        for rel in self.REQUIRED:
            if not (root / rel).exists():
                raise MissingWeightsError("faceme", rel, [str(root)], spec.fetch + " (see restorer.reffr.FaceMeRefFR)")
        self._root = root
        return root

    def command(self, input_dir: Path, ref_dir: Path, result_dir: Path) -> list[str]:
        """The ``infer.py`` command line for one identity (the FaceMe README's Quick Inference)."""
        root = self.load()
        cmd = [
            self.python, str(root / "infer.py"),
            "--pretrained_model_name_or_path", self.base_model,
            "--mix_path", str(root / "weights" / "mix"),
            "--controlnet_model_name_or_path", str(root / "weights" / "controlnet"),
            "--input_dir", str(input_dir),
            "--ref_dir", str(ref_dir),
            "--result_dir", str(result_dir),
            f"--seed={self.seed}",
        ]
        if self.color_correction:
            cmd.append("--color_correction")
        return cmd

    def _run(self, cmd: list[str]) -> None:
        root = self.load()
        try:
            # cwd = the checkout: infer.py imports its own packages (arch, utils) and finds
            # antelopev2 under ./models, both relative to the working directory.
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InsceneError(f"FaceMe could not run ({' '.join(cmd[:2])}): {exc}") from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["(no output)"]
            raise InsceneError(f"FaceMe infer.py failed (exit {proc.returncode}): {tail[0]}")

    def restore(self, batch: RefFRBatch) -> list[np.ndarray]:
        """Run FaceMe once per identity on the aligned crops; returns the restored crops."""
        import cv2

        self.load()
        groups: dict[str, list[int]] = {}
        for i, refs in enumerate(batch.references):
            if not refs:
                raise BadInputError(f"Ref-FR 'faceme' needs identity references (none for face {i})")
            # faces without an identity id are grouped by their own reference list
            groups.setdefault(batch.identities[i] or f"face{i}", []).append(i)
        out: list[np.ndarray | None] = [None] * len(batch)
        tmp = Path(tempfile.mkdtemp(prefix="inscene-faceme-"))
        try:
            for g, (ident, idx) in enumerate(sorted(groups.items())):
                base = tmp / f"id{g:04d}"
                lq_dir, ref_dir, res_dir = base / "lq", base / "ref", base / "out"
                for d in (lq_dir, ref_dir, res_dir):
                    d.mkdir(parents=True)
                for j, ref in enumerate(batch.references[idx[0]]):
                    _check_crop(ref, f"reference {j} of {ident}")
                    cv2.imwrite(str(ref_dir / f"ref{j:03d}.png"), np.ascontiguousarray(ref[:, :, ::-1]))
                for i in idx:
                    cv2.imwrite(str(lq_dir / f"face{i:05d}.png"), np.ascontiguousarray(batch.lq[i][:, :, ::-1]))
                self._run(self.command(lq_dir, ref_dir, res_dir))
                for i in idx:
                    got = cv2.imread(str(res_dir / f"face{i:05d}.png"), cv2.IMREAD_COLOR)
                    if got is None:
                        raise InsceneError(f"FaceMe wrote no result for face {i} in {res_dir}")
                    rgb = got[:, :, ::-1]
                    size = batch.lq[i].shape[0]
                    if rgb.shape[:2] != (size, size):
                        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
                    out[i] = np.ascontiguousarray(rgb, dtype=np.uint8)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return [o for o in out if o is not None]

    def describe(self) -> dict[str, Any]:
        """Metadata, plus the FaceMe options."""
        return {**super().describe(), "base_model": self.base_model, "seed": self.seed,
                "color_correction": self.color_correction}


_REGISTRY: dict[str, str | type] = {
    "faceme": "restorer.reffr:FaceMeRefFR",
    "gt": "restorer.reffr:GroundTruthRefFR",
    "passthrough": "restorer.reffr:PassthroughRefFR",
}


def _resolve(target: str | type) -> type:
    if isinstance(target, type):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def create_ref_fr(name: str, **opts: Any) -> RefFR:
    """A Ref-FR backend by name (see :func:`list_ref_fr`); ``opts`` go to its constructor."""
    if name not in _REGISTRY:
        raise BadInputError(f"unknown Ref-FR backend '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    cls = _resolve(_REGISTRY[name])
    try:
        return cls(**opts)
    except TypeError as exc:
        raise BadInputError(f"Ref-FR '{name}': {exc}") from exc


def list_ref_fr() -> list[str]:
    """Registered Ref-FR backend names."""
    return sorted(_REGISTRY)


def register_ref_fr(name: str, target: str | type) -> None:
    """Add a backend class (or ``"module:Class"``) under ``name``."""
    _REGISTRY[name] = target


def as_batch(lq: Sequence[np.ndarray], **kw: Any) -> RefFRBatch:
    """Convenience: a :class:`RefFRBatch` from lists."""
    return RefFRBatch(lq=list(lq), **kw)
