"""``inscene restore``: run a trained Face2Scene restorer on images, a folder, or a dataset split.

Provenance: Face2Scene (arXiv 2603.16570) §3 (the two-stage pipeline), §4.1 (the restorer is applied
to the InScene validation/test splits), §7.2 (CFG with lambda_cfg = 1.10 by default).

Inputs:

* one image file, or a folder of images (``png``, ``jpg``, ``jpeg``, ``webp``, ``bmp``, ``tif``);
* a dataset folder (WebDataset shards) with ``--split``: the LQ member of each sample (``lq0.png``,
  then ``lq.png``) is restored, and the sample's ``identity_id`` selects its references.

Ref-FR backends (``--ref-fr``): ``faceme`` (the paper's) needs ``--refs``; ``gt`` needs the
ground-truth image, which only dataset inputs carry (the sample's ``hq.*``, else ``gt.*``, member;
resized to the LQ's size): with image inputs it is refused before any work, as is ``faceme``
without references. A model without degradation tokens runs no Stage I and needs neither.

References (``--refs``): a folder of photos of the person (used for every input), or a folder with
one sub-folder per ``identity_id`` (dataset inputs, or ``--identity`` for images): the same layout
``inscene restorer prepare-pairs --refs`` reads. Photos are detected and aligned by Stage I; aligned
512x512 crops are used as they are.

Outputs in ``--out``: one PNG per input (named by the input's stem or the sample key) and
``restore.json``: the run (checkpoint, base model, Ref-FR, CFG, device, dtype, settings) and, per
image, whether a face pair was used (or why not), the Stage I transform and crop box, the number of
degradation tokens, timings, or the error that stopped that image. A single image with ``--out``
ending in an image suffix is written there, with the JSON beside it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inscene.errors import BadInputError, InsceneError

__all__ = [
    "IMAGE_SUFFIXES", "ReferenceStore", "RestoreReport", "auto_device", "load_restorer", "preflight", "run_restore",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_LQ_FIELDS = ("lq0.png", "lq.png")
_GT_STEMS = ("hq", "gt")
_OUT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def auto_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def auto_dtype(dtype: str, device: str) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` elsewhere."""
    if dtype != "auto":
        return dtype
    return "bf16" if str(device).startswith("cuda") else "fp32"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ReferenceStore:
    """Identity references from a folder: photos directly inside (one person), or one sub-folder per
    identity id. Decoded once per identity.

    Args:
        path: the folder or one image file (None: no references).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None and not self.path.exists():
            raise BadInputError(f"--refs: no such file or folder: {self.path}")
        self._cache: dict[str, list[np.ndarray]] = {}

    @property
    def empty(self) -> bool:
        """No reference photo at all: no path, or a folder without images (directly or one level down)."""
        if self.path is None:
            return True
        if self.path.is_file():
            return False
        return not _images_in(self.path) and not any(_images_in(d) for d in self.path.iterdir() if d.is_dir())

    def get(self, identity: str | None) -> list[np.ndarray]:
        """The reference photos for ``identity`` (the shared ones when the folder has no sub-folders)."""
        from inscene.imageio import decode_image

        if self.path is None:
            return []
        if self.path.is_file():
            files = [self.path]
        elif identity and (self.path / identity).is_dir():
            files = _images_in(self.path / identity)
        else:
            files = _images_in(self.path)
        key = "|".join(map(str, files))
        if key not in self._cache:
            self._cache[key] = [decode_image(f) for f in files]
        return self._cache[key]


@dataclass
class _Input:
    name: str
    image: np.ndarray | None
    source: str
    identity: str | None = None
    error: str = ""
    ground_truth: bytes | None = None  # encoded HQ member of a dataset sample


@dataclass
class RestoreReport:
    """What :func:`run_restore` did."""

    out: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r.get("error"))

    @property
    def without_face(self) -> int:
        return sum(1 for r in self.records if not r.get("error") and not r.get("face_found"))


def _inputs(source: Path, split: str | None, identity: str | None) -> tuple[list[Any], str]:
    """Lazy inputs and their kind (``image``, ``folder``, ``dataset``)."""
    from inscene.imageio import decode_image

    def load(path: Path) -> _Input:
        try:
            return _Input(path.stem, decode_image(path), str(path), identity)
        except InsceneError as exc:
            return _Input(path.stem, None, str(path), identity, error=str(exc))

    if source.is_file():
        return [lambda: load(source)], "image"
    if not source.is_dir():
        raise BadInputError(f"no such file or folder: {source}")
    from inscene.shards import shard_paths

    if shard_paths(source):
        if split is None:
            raise BadInputError(f"{source} is a dataset folder: give --split (e.g. val-synthetic, val)")
        return list(_dataset_inputs(source, split)), "dataset"
    files = _images_in(source)
    if not files:
        raise BadInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    return [lambda p=p: load(p) for p in files], "folder"


def _dataset_inputs(root: Path, split: str):
    from inscene.imageio import decode_image
    from inscene.shards import ShardReader

    reader = ShardReader(root, split=split, decode_images=False)
    if not reader.shards:
        raise BadInputError(f"no shards for split '{split}' in {root}")
    for s in reader:
        field_name = next((f for f in _LQ_FIELDS if f in s.members), None)
        ident = s.meta.get("identity_id") or None
        gt = _gt_member(s.members)
        if field_name is None:
            item = _Input(s.key, None, f"{root}:{s.key}", ident, error=f"no LQ member ({', '.join(_LQ_FIELDS)})")
        else:
            try:
                item = _Input(s.key, decode_image(s.members[field_name]), f"{root}:{s.key}.{field_name}", ident,
                              ground_truth=s.members[gt] if gt else None)
            except InsceneError as exc:
                item = _Input(s.key, None, f"{root}:{s.key}", ident, error=str(exc))
        yield lambda item=item: item


def _gt_member(members: dict[str, Any]) -> str | None:
    """The sample's ground-truth member: ``hq.<image ext>``, else ``gt.<image ext>``."""
    for stem in _GT_STEMS:
        for name in sorted(members):
            head, _, ext = name.partition(".")
            if head == stem and f".{ext.lower()}" in IMAGE_SUFFIXES:
                return name
    return None


def _check_ref_fr(backend: Any, kind: str, store: ReferenceStore) -> None:
    """Refuse, before any work, a Ref-FR backend whose inputs this run cannot give (one line)."""
    if backend.needs_ground_truth and kind != "dataset":
        raise BadInputError(
            f"--ref-fr {backend.name} needs the ground-truth image, which only dataset inputs carry (a dataset "
            "folder with --split, its samples' hq.*/gt.* member); use --ref-fr faceme or passthrough for images"
        )
    if backend.needs_references and store.empty:
        where = f"no reference photos in {store.path}" if store.path is not None else "no --refs given"
        raise BadInputError(
            f"--ref-fr {backend.name} needs identity references ({where}): give --refs, a folder of photos of "
            "the person or one sub-folder of photos per identity_id"
        )


def _check_model_ref_fr(model: Any, kind: str, store: ReferenceStore) -> None:
    """:func:`_check_ref_fr` for an already loaded restorer (no Stage I without tokens: nothing to check)."""
    backend = getattr(getattr(model, "stage1", None), "ref_fr", None)
    if backend is not None and getattr(model, "num_tokens", 0):
        _check_ref_fr(backend, kind, store)


def preflight(
    checkpoint: str | os.PathLike[str],
    *,
    kind: str = "dataset",
    refs: ReferenceStore | str | os.PathLike[str] | None = None,
    base: str | None = None,
    ref_fr: str = "faceme",
    ref_fr_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Check, without loading any model, that a restore can run; returns the checkpoint's config.

    Reads only the checkpoint's metadata: it must be a Face2Scene checkpoint, its SD-Turbo base must
    be on this machine (:func:`restorer.model.resolve_base`), and, when the model uses degradation
    tokens (Stage I runs), the Ref-FR backend must find its inputs (``gt``: dataset inputs, ``kind``;
    ``faceme``: references) and its weights (the FaceMe checkout). A model without tokens runs no
    Stage I and needs none of these.

    Raises:
        BadInputError, MissingWeightsError: one line, naming what is missing.
    """
    from restorer.model import read_checkpoint_config, resolve_base
    from restorer.reffr import create_ref_fr

    config = read_checkpoint_config(checkpoint)
    resolve_base(base, config.get("base"))
    if not (config.get("mapnet") or {}).get("num_tokens", 0):
        return config
    store = refs if isinstance(refs, ReferenceStore) else ReferenceStore(refs)
    backend = create_ref_fr(ref_fr, **({"path": str(ref_fr_path)} if ref_fr_path is not None else {}))
    _check_ref_fr(backend, kind, store)
    backend.load()  # a missing FaceMe checkout fails here, in one line
    return config


def load_restorer(
    checkpoint: str | os.PathLike[str],
    *,
    base: str | None = None,
    ref_fr: str = "faceme",
    ref_fr_path: str | os.PathLike[str] | None = None,
    detector: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    cfg_scale: float | None = None,
    latent_tile: int | None = 128,
    vae_tile: int | None = 1024,
) -> Any:
    """A :class:`restorer.model.Face2Scene` ready to run, its Ref-FR checked up front."""
    from restorer.model import Face2Scene

    dev = auto_device(device)
    opts = {"path": str(ref_fr_path)} if ref_fr_path is not None else None
    model = Face2Scene.from_checkpoint(
        checkpoint, base=base, ref_fr=ref_fr, ref_fr_opts=opts, detector=detector or "default", device=dev,
        dtype=auto_dtype(dtype, dev), cfg_scale=cfg_scale, latent_tile=latent_tile, vae_tile=vae_tile,
    )
    if model.stage1 is not None:
        model.stage1.ref_fr.load()  # a missing FaceMe checkout fails here, in one line, before any work
    return model


def run_restore(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    *,
    refs: str | os.PathLike[str] | None = None,
    identity: str | None = None,
    split: str | None = None,
    base: str | None = None,
    ref_fr: str = "faceme",
    ref_fr_path: str | os.PathLike[str] | None = None,
    detector: str | None = None,
    cfg_scale: float | None = None,
    device: str = "auto",
    dtype: str = "auto",
    scale: float = 1.0,
    console: Any = None,
    model: Any = None,
) -> RestoreReport:
    """Restore one image, a folder of images or a dataset split; see the module docstring.

    Args:
        source: image file, image folder, or dataset folder (with ``split``).
        out: output folder (or an image path for a single input).
        checkpoint: trained restorer (``.safetensors`` or the training run folder).
        refs: reference photos (see :class:`ReferenceStore`).
        identity: identity id selecting a sub-folder of ``refs`` for image inputs.
        split: dataset split folder for dataset inputs.
        base: SD-Turbo folder (default: the checkpoint's, else ``inscene weights``).
        ref_fr: Stage I's Ref-FR backend (``faceme``: needs ``refs``; ``gt``: dataset inputs only;
            ``passthrough``).
        ref_fr_path: the FaceMe checkout.
        detector: face detector (default: ``faces.detector``).
        cfg_scale: guidance scale (default: the checkpoint's, 1.10).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``.
        scale: output size = input size x scale (the LQ is resized first, bicubic).
        console: rich console for progress.
        model: an already loaded restorer (skips loading).

    Returns:
        The report (also written as ``restore.json``).

    Raises:
        BadInputError: bad arguments, or a Ref-FR backend whose inputs the run lacks (``gt`` with
            image inputs, ``faceme`` without references), before any image is restored.
    """
    from rich.console import Console

    from inscene import imageio
    from inscene.config import InsceneConfig
    from inscene.runtime import progress

    if scale <= 0:
        raise BadInputError(f"--scale must be positive, got {scale}")
    src, dest = Path(source), Path(out)
    inputs, kind = _inputs(src, split, identity)
    single_file = kind == "image" and bool(dest.suffix) and not dest.is_dir()
    if single_file and dest.suffix.lower() not in _OUT_FORMATS:
        raise BadInputError(f"--out {dest}: write png, jpg or webp (or give a folder)")
    folder = dest.parent if single_file else dest
    con = console or Console(stderr=True)
    store = ReferenceStore(refs)
    t0 = time.perf_counter()
    if model is None:
        preflight(checkpoint, kind=kind, refs=store, base=base, ref_fr=ref_fr, ref_fr_path=ref_fr_path)
        model = load_restorer(checkpoint, base=base, ref_fr=ref_fr, ref_fr_path=ref_fr_path, detector=detector,
                              device=device, dtype=dtype, cfg_scale=cfg_scale)
    else:
        _check_model_ref_fr(model, kind, store)
    load_s = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    backend = getattr(model.stage1, "ref_fr", None) if model.num_tokens else None
    needs_gt = bool(getattr(backend, "needs_ground_truth", False))
    report = RestoreReport(out=dest)
    for make in progress(inputs, "restoring", total=len(inputs), console=con):
        item = make()
        rec: dict[str, Any] = {"name": item.name, "input": item.source, "identity": item.identity}
        if item.image is None:
            rec["error"] = item.error
            report.records.append(rec)
            continue
        target = dest if single_file else folder / f"{item.name}.png"
        try:
            size = None
            if scale != 1.0:
                size = (round(item.image.shape[0] * scale), round(item.image.shape[1] * scale))
            gt = None
            if needs_gt:
                if item.ground_truth is None:
                    raise BadInputError(f"no ground-truth member ({', '.join(s + '.*' for s in _GT_STEMS)}) "
                                        f"for --ref-fr {backend.name}")
                gt = imageio.decode_image(item.ground_truth)
            res = model.restore(item.image, store.get(item.identity), size=size, cfg_scale=cfg_scale,
                                ground_truth=gt, identity=item.identity)
            target.write_bytes(imageio.encode_image(res.image, _OUT_FORMATS[target.suffix.lower()]))
            rec.update(output=str(target), **res.summary())
        except InsceneError as exc:
            rec["error"] = str(exc)
        report.records.append(rec)
    oc = model.onestep
    run = {
        "checkpoint": str(checkpoint),
        "base": model.base,
        "ref_fr": model.stage1.ref_fr.name if model.stage1 is not None else None,
        "detector": getattr(getattr(model.stage1, "detector", None), "backend", None),
        "cfg_scale": model.cfg_scale if cfg_scale is None else cfg_scale,
        "tokens": model.num_tokens,
        "device": str(oc.device),
        "dtype": str(oc.dtype).replace("torch.", ""),
        "scale": scale,
        "load_seconds": round(load_s, 3),
        "settings": InsceneConfig().flat(),
    }
    json_path = dest.with_suffix(".json") if single_file else folder / "restore.json"
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps({"run": run, "images": report.records}, indent=2, default=str) + "\n")
    tmp.replace(json_path)
    n = len(report.records)
    con.print(f"restored {n - report.failed}/{n} image(s) into {folder} ({report.without_face} without a usable "
              f"face: no degradation tokens; {report.failed} failed); details in {json_path}", highlight=False)
    return report
