"""Evaluation splits and where their samples come from.

Provenance: Face2Scene (arXiv 2603.16570) Table 1 and §4.1: the InScene validation sets
(synthetic: 1,329 samples of 100 identities; real: 524 samples of 31 identities; both with GT,
degraded by the Real-ESRGAN pipeline) and the real test set (100 phone captures of 10 identities,
no GT: no-reference metrics only, Table 4).

Two kinds of source:

* :class:`ShardSource`: an InScene dataset folder (``--data DIR``), read with
  :class:`inscene.shards.ShardReader`. The LQ and GT images are the first present of the members
  named by ``lq_fields`` and ``gt_fields`` (defaults: ``lq0.png``, ``lq.png``; ``hq.<ext>``,
  ``gt.<ext>``, as ``inscene degrade`` writes them), faces and identity come from the sample's
  metadata (``face_box``, ``faces``, ``identity_id``; see :meth:`inscene.schema.Sample.to_meta`).
  Keys and content hashes come from the parquet manifests, so listing a split decodes nothing.
* :class:`FolderSource`: a plain pair of folders (``--lq DIR --gt DIR``), files matched by name
  stem, so any dataset can be scored (no faces: face variants and the ID score are unavailable).

Sources are picklable: the evaluator sends them with a list of :class:`SampleRef` to Dask workers,
which read only those samples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inscene.errors import BadInputError
from inscene.shards import ShardReader

__all__ = [
    "DEFAULT_GT_FIELDS",
    "DEFAULT_LQ_FIELDS",
    "SPLITS",
    "DataSource",
    "EvalSample",
    "FolderSource",
    "Problem",
    "SampleRef",
    "ShardSource",
    "SplitSpec",
    "folder_label",
    "list_splits",
]

#: LQ member names tried in order: ``inscene degrade`` writes ``lq0.png`` (version 0; validation
#: splits have one version), other tools ``lq.png``.
DEFAULT_LQ_FIELDS = ("lq0.png", "lq.png")
#: GT member names tried in order: ``inscene degrade`` keeps the clean image as ``hq.<ext>``.
DEFAULT_GT_FIELDS = tuple(f"{stem}.{ext}" for stem in ("hq", "gt") for ext in ("png", "jpg", "jpeg", "webp"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class SplitSpec:
    """A named evaluation split.

    Attributes:
        name: ``val-synthetic``, ``val-real``, ``test-real``.
        has_gt: ground truth available (full-reference metrics, FID, ID score).
        locations: ``(shard split folder, subset or None)`` pairs tried in order in a dataset
            folder; the first with shards wins.
        description: one line, with the paper's counts.
    """

    name: str
    has_gt: bool
    locations: tuple[tuple[str, str | None], ...]
    description: str = ""


SPLITS: dict[str, SplitSpec] = {
    s.name: s
    for s in (
        SplitSpec(
            "val-synthetic", True, (("val-synthetic", None), ("val", "synthetic"), ("test", "val-synthetic")),
            "InScene synthetic validation: 1,329 samples, 100 identities (Table 1; Tables 2, 3, 7)",
        ),
        SplitSpec(
            "val-real", True, (("val-real", None), ("val", "real"), ("test", "val-real")),
            "InScene real validation: 524 samples, 31 identities (Table 1; Tables 2, 7)",
        ),
        SplitSpec(
            "test-real", False, (("test-real", None), ("test", "real"), ("test", "test-real")),
            "InScene real test: 100 phone captures, 10 identities, no GT (Table 1; Table 4)",
        ),
    )
}


def list_splits() -> list[str]:
    """Names of the InScene evaluation splits (any shard split folder is accepted as well)."""
    return list(SPLITS)


@dataclass(frozen=True)
class Problem:
    """Something wrong with one sample or prediction (``key`` is ``""`` for a whole-source problem).

    ``kind`` is one of ``missing`` (no prediction), ``extra`` (a prediction file for no sample),
    ``duplicate``, ``resolution``, ``corrupt``, ``unreadable`` (damaged shard or file), ``no-lq``,
    ``no-gt``, ``no-face``, ``error``.
    """

    key: str
    kind: str
    detail: str

    def line(self) -> str:
        return f"{self.key or '-'}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class SampleRef:
    """One sample, without pixels: what the driver knows from manifests or file listings.

    Attributes:
        key: sample key.
        lq_hash: sha256 of the LQ member/file ("" when absent).
        gt_hash: sha256 of the GT member/file ("" when absent).
        location: where to read it (shard path, or ``lq_path|gt_path``).
        meta: flat metadata (faces, identity, size).
    """

    key: str
    lq_hash: str
    gt_hash: str
    location: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class EvalSample:
    """One decoded sample.

    Attributes:
        key: sample key.
        lq: HxWx3 uint8 RGB, or None.
        gt: HxWx3 uint8 RGB, or None (test-real).
        meta: flat metadata.
    """

    key: str
    lq: np.ndarray | None
    gt: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def faces(self) -> list[Any]:
        """Every recorded face (:class:`inscene.schema.Face`), from the ``faces`` metadata."""
        return faces_from_meta(self.meta)

    @property
    def face_box(self) -> list[float] | None:
        """The primary (largest) face box ``[x1, y1, x2, y2]`` in GT pixels, or None."""
        return face_box_from_meta(self.meta)

    @property
    def target_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` a prediction must have: the GT's, else the recorded size, else None."""
        if self.gt is not None:
            return int(self.gt.shape[0]), int(self.gt.shape[1])
        w, h = self.meta.get("width"), self.meta.get("height")
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
            return h, w
        return None


def face_box_from_meta(meta: dict[str, Any]) -> list[float] | None:
    raw = meta.get("face_box")
    if raw in (None, "", "[]"):
        return None
    box = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise BadInputError(f"face_box must be [x1, y1, x2, y2], got {raw!r}")
    return [float(v) for v in box]


def faces_from_meta(meta: dict[str, Any]) -> list[Any]:
    """Face records from ``faces`` (JSON list), else the primary ``face_box`` + ``face_landmarks``."""
    from inscene.schema import Face

    raw = meta.get("faces")
    if raw not in (None, "", "[]"):
        items = json.loads(raw) if isinstance(raw, str) else raw
        faces = [Face.model_validate(f) for f in items]
        return sorted(faces, key=lambda f: f.area, reverse=True)
    box = face_box_from_meta(meta)
    lms = meta.get("face_landmarks")
    if box is None or lms in (None, ""):
        return []
    lms = json.loads(lms) if isinstance(lms, str) else lms
    return [Face(box=box, landmarks=lms, score=1.0, backend="metadata")]


class DataSource:
    """Where an evaluation split's samples come from (picklable)."""

    split: str
    has_gt: bool
    needs_lq: bool = True

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def refs(self) -> tuple[list[SampleRef], list[Problem]]:
        """Every sample of the split (sorted by key) and problems found while listing."""
        raise NotImplementedError

    def read(self, refs: list[SampleRef], *, need_lq: bool = True) -> Iterator[EvalSample | Problem]:
        """Decode these samples (a :class:`Problem` in place of each one that cannot be read)."""
        raise NotImplementedError


def _decode(data: bytes | str | os.PathLike, label: str) -> np.ndarray:
    from inscene.imageio import decode_image

    return decode_image(data if isinstance(data, bytes) else Path(data))


# --------------------------------------------------------------------------------------------
# InScene shards


class ShardSource(DataSource):
    """Samples of one split of an InScene dataset folder.

    Args:
        root: dataset folder (``{root}/{split}/{subset}-NNNNN.tar`` + parquet manifests).
        split: an InScene split name (:data:`SPLITS`) or any shard split folder name.
        shard_split: the shard folder to read (default: the first of the split's
            :attr:`SplitSpec.locations` present on disk, else ``split`` itself).
        subset: only shards of this subset (default: the location's, else all).
        lq_fields: member names of the degraded input, first present wins (a str for one).
        gt_fields: member names of the ground truth, first present wins (a str for one).
        has_gt: override whether GT is expected (default: the split's, else whether any manifest
            lists a GT field).
        on_error: ``skip`` (a damaged shard's samples are reported ``unreadable``) or ``raise``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        shard_split: str | None = None,
        subset: str | None = None,
        lq_fields: str | Sequence[str] = DEFAULT_LQ_FIELDS,
        gt_fields: str | Sequence[str] = DEFAULT_GT_FIELDS,
        has_gt: bool | None = None,
        on_error: str = "skip",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadInputError(f"not a dataset folder: {self.root}")
        if on_error not in ("skip", "raise"):
            raise BadInputError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.split = split
        self.lq_fields = (lq_fields,) if isinstance(lq_fields, str) else tuple(lq_fields)
        self.gt_fields = (gt_fields,) if isinstance(gt_fields, str) else tuple(gt_fields)
        if not self.lq_fields or not self.gt_fields:
            raise BadInputError("give at least one LQ and one GT member name")
        self.on_error = on_error
        spec = SPLITS.get(split)
        if shard_split is None:
            shard_split, loc_subset = self._find_location(spec)
            subset = subset if subset is not None else loc_subset
        self.shard_split = shard_split
        self.subset = subset
        if not self._tars():
            tried = ", ".join(f"{s}/{sub or '*'}" for s, sub in (spec.locations if spec else ((split, None),)))
            raise BadInputError(f"no shards for split '{split}' in {self.root} (looked for {tried})")
        if has_gt is None:
            has_gt = spec.has_gt if spec is not None else self._manifests_have(self.gt_fields)
        self.has_gt = bool(has_gt)

    def _find_location(self, spec: SplitSpec | None) -> tuple[str, str | None]:
        candidates = spec.locations if spec is not None else ((self.split, None),)
        for shard_split, subset in candidates:
            folder = self.root / shard_split
            if not folder.is_dir():
                continue
            pattern = f"{subset}-*.tar" if subset else "*.tar"
            if any(folder.glob(pattern)):
                return shard_split, subset
        return candidates[0]

    def _tars(self) -> list[Path]:
        folder = self.root / self.shard_split
        if not folder.is_dir():
            return []
        pattern = f"{self.subset}-[0-9][0-9][0-9][0-9][0-9].tar" if self.subset else "*-[0-9][0-9][0-9][0-9][0-9].tar"
        return sorted(p for p in folder.glob(pattern) if p.is_file())

    def _manifests_have(self, fields: Sequence[str]) -> bool:
        import pyarrow.parquet as pq

        from inscene.shards import manifest_column

        cols = {manifest_column("sha256", f) for f in fields}
        for tar in self._tars():
            manifest = tar.with_suffix(".parquet")
            if manifest.is_file() and cols & set(pq.read_schema(manifest).names):
                return True
        return False

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "shards",
            "root": str(self.root.resolve()),
            "split": self.split,
            "shard_split": self.shard_split,
            "subset": self.subset,
            "lq_fields": list(self.lq_fields),
            "gt_fields": list(self.gt_fields),
            "has_gt": self.has_gt,
        }

    def refs(self) -> tuple[list[SampleRef], list[Problem]]:
        import pyarrow.parquet as pq

        from inscene.shards import manifest_column

        lq_cols = [manifest_column("sha256", f) for f in self.lq_fields]
        gt_cols = [manifest_column("sha256", f) for f in self.gt_fields]
        wanted_meta = ("width", "height", "identity_id", "face_box", "face_landmarks", "faces", "n_faces", "subset")
        refs: dict[str, SampleRef] = {}
        problems: list[Problem] = []
        for tar in self._tars():
            manifest = tar.with_suffix(".parquet")
            rows: list[dict[str, Any]]
            if manifest.is_file():
                try:
                    names = pq.read_schema(manifest).names
                    cols = ["__key__"] + [c for c in (*lq_cols, *gt_cols, *wanted_meta) if c in names]
                    rows = pq.read_table(manifest, columns=cols).to_pylist()
                except Exception as exc:  # noqa: BLE001 - a damaged manifest: fall back to the tar
                    problems.append(Problem("", "unreadable", f"manifest {manifest.name}: {exc}"))
                    rows = self._scan_rows(tar, problems)
            else:
                rows = self._scan_rows(tar, problems)
            for row in rows:
                key = row["__key__"]
                if key in refs:
                    problems.append(Problem(key, "duplicate", f"key in {tar.name} and {refs[key].location}"))
                    continue
                meta = {k: row[k] for k in wanted_meta if k in row and row[k] is not None}
                lq_hash = next((row[c] for c in lq_cols if row.get(c)), "")
                gt_hash = next((row[c] for c in gt_cols if row.get(c)), "")
                refs[key] = SampleRef(key, lq_hash, gt_hash, str(tar), meta)
        return [refs[k] for k in sorted(refs)], problems

    def _scan_rows(self, tar: Path, problems: list[Problem]) -> list[dict[str, Any]]:
        """Keys, hashes and metadata straight from a tar without a manifest."""
        import hashlib
        import warnings

        from inscene.shards import ShardWarning, manifest_column

        rows = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ShardWarning)
            for s in _OneShardReader(self.root, tar, on_error="skip", decode_images=False):
                row: dict[str, Any] = {"__key__": s.key, **s.meta}
                for f in (*self.lq_fields, *self.gt_fields):
                    if f in s.members:
                        row[manifest_column("sha256", f)] = hashlib.sha256(s.members[f]).hexdigest()
                rows.append(row)
        for w in caught:
            problems.append(Problem("", "unreadable", str(w.message)))
        return rows

    def read(self, refs: list[SampleRef], *, need_lq: bool = True) -> Iterator[EvalSample | Problem]:
        import warnings

        from inscene.shards import ShardWarning

        by_shard: dict[str, dict[str, SampleRef]] = {}
        for ref in refs:
            by_shard.setdefault(ref.location, {})[ref.key] = ref
        for location, wanted in by_shard.items():
            seen: set[str] = set()
            damage: list[str] = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ShardWarning)
                reader = _OneShardReader(self.root, Path(location), on_error=self.on_error, decode_images=False)
                for s in reader:
                    ref = wanted.get(s.key)
                    if ref is None or s.key in seen:
                        continue
                    seen.add(s.key)
                    yield self._decode_sample(s, ref, need_lq)
                damage = [str(w.message) for w in caught]
            why = damage[0] if damage else f"not found in {Path(location).name}"
            for key in sorted(set(wanted) - seen):
                yield Problem(key, "unreadable", why)

    def _decode_sample(self, s: Any, ref: SampleRef, need_lq: bool) -> EvalSample | Problem:
        lq = gt = None
        try:
            if need_lq:
                name = next((f for f in self.lq_fields if f in s.members), None)
                if name is None:
                    return Problem(s.key, "no-lq", f"sample has none of {', '.join(self.lq_fields)} (see --lq-field)")
                lq = _decode(s.members[name], f"{s.key}.{name}")
            if self.has_gt:
                name = next((f for f in self.gt_fields if f in s.members), None)
                if name is None:
                    return Problem(s.key, "no-gt", f"sample has none of {', '.join(self.gt_fields)} (see --gt-field)")
                gt = _decode(s.members[name], f"{s.key}.{name}")
        except Exception as exc:  # noqa: BLE001 - a damaged member is this sample's problem
            return Problem(s.key, "corrupt", f"{type(exc).__name__}: {exc}")
        meta = {**s.meta, **{k: v for k, v in ref.meta.items() if k not in s.meta}}
        return EvalSample(s.key, lq, gt, meta)


class _OneShardReader(ShardReader):
    """A ShardReader over a single tar (the evaluator reads one shard per partition)."""

    def __init__(self, root: Path, shard: Path, **kw: Any) -> None:
        super().__init__(root, **kw)
        self._only = Path(shard)

    @property
    def shards(self) -> list[Path]:
        return [self._only]


# --------------------------------------------------------------------------------------------
# Plain folders


def list_images(folder: Path) -> tuple[dict[str, Path], list[Problem], list[Path]]:
    """Image files of a folder by name stem; problems for duplicate stems; the other files."""
    by_stem: dict[str, Path] = {}
    problems: list[Problem] = []
    others: list[Path] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            others.append(p)
            continue
        if p.stem in by_stem:
            problems.append(Problem(p.stem, "duplicate", f"{by_stem[p.stem].name} and {p.name} in {folder}"))
            continue
        by_stem[p.stem] = p
    return by_stem, problems, others


def folder_label(lq: str | os.PathLike | None, gt: str | os.PathLike | None) -> str:
    """The default row label of a folder pair: ``folders-<GT folder name>-<8 hex>``.

    The hex digits are the start of the sha256 of the resolved GT folder path (the LQ folder's
    without GT), so rows scored on different folders land on different boards, and the same
    folder always gets the same label (pass it back with ``--split``).
    """
    import hashlib
    import re

    folder = Path(gt if gt is not None else lq).resolve()  # type: ignore[arg-type]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name).strip("_.") or "root"
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return f"folders-{name}-{digest}"


class FolderSource(DataSource):
    """A plain pair of folders, matched by file name stem (``0001.png`` <-> ``0001.jpg``).

    Args:
        lq: folder of degraded inputs (may be None when only external predictions are scored).
        gt: folder of ground truths (None: no-reference metrics only).
        split: the name rows are filed under (default ``folders``); an InScene split name
            (:data:`SPLITS`) is refused, since folder scores are not scores on that split.
        hash_memo: optional :class:`benchmarks.cache.HashMemo` to skip re-hashing unchanged files.
    """

    def __init__(
        self,
        lq: str | os.PathLike | None,
        gt: str | os.PathLike | None,
        *,
        split: str = "folders",
        hash_memo: Any = None,
    ) -> None:
        if lq is None and gt is None:
            raise BadInputError("give --lq DIR, --gt DIR or both")
        if split in SPLITS:
            raise BadInputError(
                f"--split {split} is an InScene split: folder pairs (--lq/--gt) are filed under their own "
                "label (default 'folders'); to score that split give --data DIR"
            )
        for folder, what in ((lq, "--lq"), (gt, "--gt")):
            if folder is not None and not Path(folder).is_dir():
                raise BadInputError(f"{what}: not a folder: {folder}")
        self.lq = Path(lq) if lq is not None else None
        self.gt = Path(gt) if gt is not None else None
        self.split = split
        self.has_gt = self.gt is not None
        self.hash_memo = hash_memo

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["hash_memo"] = None  # workers never hash: the driver did
        return state

    def describe(self) -> dict[str, Any]:
        return {"kind": "folders", "lq": str(self.lq.resolve()) if self.lq else None,
                "gt": str(self.gt.resolve()) if self.gt else None, "split": self.split, "has_gt": self.has_gt}

    def _hash(self, path: Path | None) -> str:
        if path is None:
            return ""
        if self.hash_memo is not None:
            return self.hash_memo.sha256(path)
        from benchmarks.cache import file_sha256

        return file_sha256(path)

    def refs(self) -> tuple[list[SampleRef], list[Problem]]:
        problems: list[Problem] = []
        lq_files: dict[str, Path] = {}
        gt_files: dict[str, Path] = {}
        if self.lq is not None:
            lq_files, probs, _ = list_images(self.lq)
            problems += probs
        if self.gt is not None:
            gt_files, probs, _ = list_images(self.gt)
            problems += probs
        keys = sorted(gt_files) if self.gt is not None else sorted(lq_files)
        if self.gt is not None and self.lq is not None:
            for k in sorted(set(lq_files) - set(gt_files)):
                problems.append(Problem(k, "no-gt", f"{lq_files[k].name} has no ground truth in {self.gt}"))
        refs = []
        for k in keys:
            lq_p, gt_p = lq_files.get(k), gt_files.get(k)
            loc = json.dumps([str(lq_p) if lq_p else None, str(gt_p) if gt_p else None])
            refs.append(SampleRef(k, self._hash(lq_p), self._hash(gt_p), loc, {}))
        return refs, problems

    def read(self, refs: list[SampleRef], *, need_lq: bool = True) -> Iterator[EvalSample | Problem]:
        for ref in refs:
            lq_p, gt_p = json.loads(ref.location)
            try:
                if need_lq and lq_p is None:
                    yield Problem(ref.key, "no-lq", f"no input image named {ref.key}.* in {self.lq}")
                    continue
                lq = _decode(lq_p, lq_p) if (need_lq and lq_p) else None
                gt = _decode(gt_p, gt_p) if gt_p else None
            except Exception as exc:  # noqa: BLE001 - a damaged file is this sample's problem
                yield Problem(ref.key, "corrupt", f"{type(exc).__name__}: {exc}")
                continue
            yield EvalSample(ref.key, lq, gt, {})


def iter_samples(source: DataSource, refs: Iterable[SampleRef] | None = None) -> Iterator[EvalSample | Problem]:
    """All samples of a source, decoded (convenience for scripts and tests)."""
    if refs is None:
        refs, _ = source.refs()
    yield from source.read(list(refs))
