"""`inscene develop-raw`: phone RAW captures + gallery references -> the InScene real test split.

Provenance: Face2Scene (arXiv 2603.16570) §4.1 "Test data" and §6.3: 100 Samsung S25 Edge RAW
captures of 10 people at ISO 3200/1600/800 (some with motion blur), developed with rawpy, each
person with clean references from their gallery. Users capture their own test sets the same way.

Input::

    CAPTURES/<identity>/*.dng   (any RAW LibRaw reads; JPEG-XL DNG 1.7 through tifffile+imagecodecs)
    REFS/<identity>/*.jpg       (gallery references: jpg/png/webp/tif/bmp)

Output (``--out DIR``, a dataset folder)::

    DIR/test/real-NNNNN.tar         one sample per capture: lq.png (or lq.jpg) + json metadata
    DIR/identities/refs-NNNNN.tar   one sample per reference image: ref.png + json metadata
    DIR/index.json, *.parquet       manifests (shards.py)
    DIR/develop-raw.json            the run's settings, input folders and a digest of the input
                                    listing (keys, sizes, mtimes): a rerun must match them, so added,
                                    removed or changed files need a new --out (pseudonymised: keyed
                                    digests of them and the salt's fingerprint)
    DIR/decisions/{test-real,identities-refs}/decisions/part-*.parquet   the run's log: one row per
                                    file, accepted or rejected with its reason and measured values

The test split has no GT (that is the point of it). A capture sample records its identity, group
(``--groups`` file, else the ISO group from the metadata: ``iso3200``/``iso1600``/``iso800``),
capture metadata (make, model, ISO, exposure, aperture, focal length, time; never GPS), the
development parameters and the decoder, provenance (sha256 of the RAW), and the faces found
(boxes, landmarks) so the evaluator can score face regions later. A capture without a detectable
face is kept, flagged ``no_face``.

**Publishing** (``inscene publish``) needs pseudonymous identities: ``--pseudonymise --salt-file
FILE`` does what filter-real's does (same HMAC-SHA256 and salt, :class:`pipelines.inputs.Pseudonymiser`):
``identity_id`` is ``id-`` + 16 hex digits of the capture folder's name, sample keys are HMACs of
the file's path below CAPTURES (references: ``ref-`` + the HMAC of the path below REFS), and
``source`` is ``pseudonymised:<key>``, in the shards and in the decision logs alike. The salt is
never written anywhere; keep it outside the output folder.

Identity references are stored once, in their own split (``identities``), referenced by
``identity_id``. HF ``datasets`` infers one set of features per ``load_dataset`` call from the first
tar it reads, so load each split on its own (:func:`hf_splits`)::

    load_dataset("webdataset", data_files={"test": files["test"]}, split="test")
    load_dataset("webdataset", data_files={"identities": files["identities"]}, split="identities")

Bad input never stops the run: a truncated DNG, a JPEG renamed ``.dng``, an unsupported
compression, a DNG missing required tags, a capture whose identity has no usable reference, an
unreadable reference: each is one rejected row in the decision log with its reason, and nothing of
it reaches the shards (shards and logs are written atomically per partition; reruns resume).

Runs on Dask worker processes started with spawn (LibRaw's OpenMP threads deadlock after fork).
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from inscene import imageio
from inscene.config import InsceneConfig, RawSettings
from inscene.errors import BadInputError
from inscene.outdir import listing_digest, prepare_out_dir
from inscene.schema import Provenance, Sample
from inscene.stages import Item, Rejection, RunSummary, run_stages
from pipelines.inputs import Pseudonymiser

TEST_SPLIT = "test"
TEST_SUBSET = "real"
ID_SPLIT = "identities"
ID_SUBSET = "refs"
REF_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
DEFAULT_PARTITION_SIZE = 16
RECORD_NAME = "develop-raw.json"
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]+")


def _key_part(text: str) -> str:
    return _KEY_BAD.sub("_", text).strip("_") or "x"


# ---- planning -----------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a run will process, found by scanning the input folders.

    Attributes:
        captures: one item per capture file (``item.data``: path, identity, rel, group; ``rel`` is the
            published ``source``).
        refs: one item per reference image of an identity that has captures.
        ignored: files skipped without a decision (not RAW / not an image, hidden files).
        unused_groups: ``--groups`` entries that matched no capture.
        refs_without_captures: identities with references but no capture folder.
    """

    captures: list[Item] = field(default_factory=list)
    refs: list[Item] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    unused_groups: list[str] = field(default_factory=list)
    refs_without_captures: list[str] = field(default_factory=list)


def load_groups(path: Path) -> dict[str, str]:
    """Read a ``--groups`` file: capture -> group tag.

    CSV: a header with ``file`` (or ``path``) and ``group`` columns. YAML: a mapping
    ``file: group`` (a list of tags is joined with ``+``, e.g. ``iso3200+motion``). ``file`` is the
    capture's path relative to CAPTURES (``alice/IMG_0001.dng``) or its file name.

    Raises:
        BadInputError: unreadable file, unknown format or missing columns.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BadInputError(f"cannot read --groups {path}: {exc}") from exc
    out: dict[str, str] = {}
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise BadInputError(f"--groups {path}: invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise BadInputError(f"--groups {path}: expected a mapping 'file: group'")
        for name, tag in data.items():
            tags = tag if isinstance(tag, list) else [tag]
            out[str(name)] = "+".join(str(t) for t in tags if t is not None and str(t))
    elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
        if rows and not ({"file", "group"} <= set(rows[0]) or {"path", "group"} <= set(rows[0])):
            raise BadInputError(f"--groups {path}: needs columns 'file' (or 'path') and 'group'")
        for row in rows:
            name = (row.get("file") or row.get("path") or "").strip()
            if name:
                out[name] = (row.get("group") or "").strip()
    else:
        raise BadInputError(f"--groups {path}: use a .csv, .tsv or .yaml file")
    return {k.replace("\\", "/"): v for k, v in out.items()}


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def plan_inputs(
    captures: Path, refs: Path, groups: dict[str, str] | None = None, pseudonymiser: Pseudonymiser | None = None
) -> Plan:
    """Scan ``CAPTURES/<identity>/`` and ``REFS/<identity>/`` into work items (sorted, so reruns resume).

    With a ``pseudonymiser`` (``--pseudonymise``, the same HMAC scheme as filter-real's): identity
    ids are ``id-`` pseudonyms of the capture folder names, keys are HMACs of the file's path
    relative to its root (references: ``ref-`` + that), and the recorded source is
    ``pseudonymised:<key>``, so no folder or file name reaches the shards or the decision logs.

    Raises:
        BadInputError: a missing folder, no capture at all, or two folders with the same identity id.
    """
    from inscene.raw import RAW_SUFFIXES

    captures, refs = Path(captures), Path(refs)
    for what, folder in (("CAPTURES", captures), ("--refs", refs)):
        if not folder.is_dir():
            raise BadInputError(f"{what} {folder} is not a folder")
    groups = dict(groups or {})
    used: set[str] = set()
    plan = Plan()
    ids: dict[str, str] = {}

    def identity_of(name: str) -> str:
        ident = _key_part(name)
        if ident in ids and ids[ident] != name:
            raise BadInputError(f"identity folders {ids[ident]!r} and {name!r} map to the same id {ident!r}")
        ids[ident] = name
        return ident

    keys: set[str] = set()
    for path in _visible_files(captures):  # files outside identity folders: rejected, not lost
        if path.suffix.lower() in RAW_SUFFIXES:
            item = _item(path, path.name, _key_part(path.stem), keys, pseudonymiser)
            item.data.update(identity="", group="", problem="capture is not inside an identity folder")
            plan.captures.append(item)
        else:
            plan.ignored.append(path.name)
    capture_ids: dict[str, str] = {}
    published: dict[str, str] = {}  # identity key -> identity_id written to the samples
    for folder in sorted(p for p in captures.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ident = identity_of(folder.name)
        capture_ids[ident] = folder.name
        published[ident] = pseudonymiser.identity(folder.name) if pseudonymiser is not None else ident
        for path in _visible_files(folder):
            rel = f"{folder.name}/{path.name}"
            if path.suffix.lower() not in RAW_SUFFIXES:
                plan.ignored.append(rel)
                continue
            group = groups.get(rel)
            if group is None:
                group = groups.get(path.name)
                if group is not None:
                    used.add(path.name)
            else:
                used.add(rel)
            item = _item(path, rel, f"{ident}_{_key_part(path.stem)}", keys, pseudonymiser)
            item.data.update(identity=published[ident], group=group or "")
            plan.captures.append(item)
    if not plan.captures:
        raise BadInputError(f"no RAW captures found under {captures} (expected CAPTURES/<identity>/*.dng)")

    ref_keys: set[str] = set()
    ref_folders: dict[str, Path] = {}
    for folder in sorted(p for p in refs.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ident = _key_part(folder.name)
        if ident in ref_folders:
            raise BadInputError(f"reference folders {ref_folders[ident].name!r} and {folder.name!r} map to the "
                                f"same id {ident!r}")
        ref_folders[ident] = folder
    for ident in sorted(ref_folders):
        if ident not in capture_ids:
            plan.refs_without_captures.append(ref_folders[ident].name)
            continue
        folder = ref_folders[ident]
        index = 0
        for path in _visible_files(folder):
            rel = f"{folder.name}/{path.name}"
            if path.suffix.lower() not in REF_SUFFIXES:
                plan.ignored.append(f"refs/{rel}")
                continue
            item = _item(path, rel, f"{ident}_ref_{_key_part(path.stem)}", ref_keys, pseudonymiser, prefix="ref-")
            item.data.update(identity=published[ident], ref_index=index)
            index += 1
            plan.refs.append(item)
    plan.unused_groups = sorted(set(groups) - used)
    return plan


def _item(path: Path, rel: str, key: str, seen: set[str], pseudonymiser: Pseudonymiser | None,
          prefix: str = "") -> Item:
    """A work item for ``path`` (``rel``: its path relative to its root), pseudonymised when asked.

    Pseudonymised as filter-real does it (:func:`pipelines.inputs.list_inputs`): the key is the HMAC
    of ``rel`` and the recorded source ``pseudonymised:<key>``; the real path stays in ``data["path"]``.
    """
    if pseudonymiser is None:
        item = Item(key=_unique(key, seen), source=str(path))
        item.data.update(path=str(path), rel=rel)
        return item
    key = _unique(prefix + pseudonymiser.key(rel), seen)
    label = f"pseudonymised:{key}"
    item = Item(key=key, source=label)
    item.data.update(path=str(path), rel=label)
    return item


def _reason(exc: Any, item: Item) -> str:
    """A decode error as a decision-log reason; the file's real path never appears in it (pseudonymised runs)."""
    text = f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason
    path = item.data.get("path", item.source)
    return text.replace(path, item.source) if path != item.source else text


def _unique(key: str, seen: set[str]) -> str:
    out, n = key, 1
    while out in seen:
        n += 1
        out = f"{key}-{n}"
    seen.add(out)
    return out


# ---- stages -------------------------------------------------------------------------------------


@dataclass
class IdentityStage:
    """Reject captures that cannot join the split: no identity folder, or no usable reference."""

    name: str = "identity"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        problem = item.data.get("problem")
        if problem:
            return Rejection(self.name, problem)
        return item


@dataclass
class DevelopStage:
    """Read, hash and develop one RAW (rawpy; JPEG-XL DNG via tifffile+imagecodecs), with its metadata."""

    settings: RawSettings = field(default_factory=RawSettings)
    max_pixels: int = imageio.DEFAULT_MAX_PIXELS
    name: str = "develop"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing heavy: LibRaw is loaded with rawpy."""

    def __call__(self, item: Item) -> Item | Rejection:
        from inscene.raw import RawDecodeError, develop_file, iso_group

        t0 = time.perf_counter()
        try:
            dev = develop_file(item.data.get("path", item.source), self.settings, max_pixels=self.max_pixels)
        except RawDecodeError as exc:
            return Rejection(self.name, _reason(exc, item), {"reject_reason": exc.reason})
        item.measured.update(
            develop_seconds=round(time.perf_counter() - t0, 4),
            file_bytes=dev.file_bytes,
            height=int(dev.rgb.shape[0]),
            width=int(dev.rgb.shape[1]),
            iso=dev.capture.iso,
            compression=dev.compression,
        )
        item.backends["decoder"] = dev.decoder
        ig = iso_group(dev.capture.iso, self.settings.iso_groups)
        item.data.update(rgb=dev.rgb, sha256=dev.sha256)
        item.meta.update(
            group=item.data.get("group") or ig,
            iso_group=ig,
            **dev.capture.as_meta(),
            develop=json.dumps(dev.develop, sort_keys=True),
            decoder=dev.decoder,
            raw_format=dev.raw_format,
            raw_compression=dev.compression,
            raw_bytes=dev.file_bytes,
            orientation=dev.flip,
        )
        return item


@dataclass
class ReferenceStage:
    """Read, hash and decode one gallery reference (EXIF orientation applied, bomb guard)."""

    max_pixels: int = imageio.DEFAULT_MAX_PIXELS
    name: str = "reference"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing heavy to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        try:
            data, _ = imageio.read_source(item.data.get("path", item.source))
            rgb = imageio.decode_image(data, max_pixels=self.max_pixels)
        except imageio.ImageDecodeError as exc:
            return Rejection(self.name, _reason(exc, item), {"reject_reason": exc.reason})
        item.data.update(rgb=rgb, sha256=imageio.sha256_bytes(data))
        item.measured.update(file_bytes=len(data), height=int(rgb.shape[0]), width=int(rgb.shape[1]))
        item.backends["decoder"] = "pillow"
        return item


@dataclass
class FaceStage:
    """Detect and record faces; never rejects (a capture without a face is kept, flagged ``no_face``)."""

    detector: str = "dlib"
    name: str = "faces"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Load the detector's models once per worker."""
        from inscene.faces import create_detector

        self._det = create_detector(self.detector)

    def __call__(self, item: Item) -> Item | Rejection:
        rgb = item.data["rgb"]
        rgb8 = rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)
        faces = self._det.detect(rgb8)
        item.data["faces"] = faces
        h, w = rgb.shape[:2]
        item.measured["n_faces"] = len(faces)
        item.measured["face_area_fraction"] = round(max((f.area for f in faces), default=0.0) / float(h * w), 6)
        item.backends["detector"] = faces[0].backend if faces else self._det.backend
        return item


@dataclass
class EncodeStage:
    """Encode the image (no metadata in the file) and build the sample's record."""

    split: str
    subset: str
    field_name: str
    fmt: str = "png"
    quality: int = 95
    name: str = "encode"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        rgb = item.data.pop("rgb")
        faces = item.data.pop("faces", [])
        blob = imageio.encode_image(rgb, self.fmt, quality=self.quality)
        sample = Sample(
            key=item.key,
            split=self.split,
            subset=self.subset,
            width=int(rgb.shape[1]),
            height=int(rgb.shape[0]),
            identity_id=item.data["identity"],
            faces=faces,
            provenance=Provenance(source=item.data["rel"], sha256=item.data["sha256"], backends=dict(item.backends)),
        )
        extra = dict(item.meta)
        item.meta = sample.to_meta()
        item.meta.update(extra)
        item.meta.update(no_face=not faces, bit_depth=int(rgb.dtype.itemsize * 8))
        if "ref_index" in item.data:
            item.meta["ref_index"] = int(item.data["ref_index"])
        ext = "jpg" if self.fmt == "jpeg" else self.fmt
        item.data["members"] = {f"{self.field_name}.{ext}": blob}
        item.measured["encoded_bytes"] = len(blob)
        return item


@dataclass
class ShardSink:
    """Writes one partition's samples to one shard (shard index = partition index)."""

    root: str
    split: str
    subset: str

    def __call__(self, partition: int, items: list[Item]) -> None:
        if not items:
            return
        from inscene.shards import ShardWriter

        with ShardWriter(
            self.root, self.split, self.subset, start_shard=partition, max_count=len(items),
            max_bytes=2**62, overwrite=True,
        ) as writer:
            for item in items:
                writer.write(item.key, item.data["members"], item.meta)


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class DevelopRawResult:
    """What a run produced."""

    out: Path
    captures: RunSummary
    refs: RunSummary
    plan: Plan
    seconds: float

    @property
    def ok(self) -> bool:
        """True when no file failed with an unexpected error (rejections are expected)."""
        return self.captures.errors == 0 and self.refs.errors == 0

    def rejections(self) -> list[tuple[str, str, str]]:
        """``(file, stage, reason)`` of every rejected or failed file, references first."""
        rows = []
        for summary in (self.refs, self.captures):
            df = summary.decisions
            if df.empty:
                continue
            for _, r in df[~df["accepted"].astype(bool)].iterrows():
                rows.append((str(r["source"]), str(r["stage"]), str(r["reason"])))
        return rows

    def summary(self) -> dict[str, Any]:
        """Counts a caller can print or check."""
        df = self.captures.decisions
        acc = df[df["accepted"].astype(bool)] if not df.empty else df
        n_faces = acc["m.n_faces"].fillna(0) if "m.n_faces" in acc else []
        decoders = {}
        if "backends" in acc:
            for b in acc["backends"]:
                dec = json.loads(b).get("decoder", "")
                decoders[dec] = decoders.get(dec, 0) + 1
        return {
            "captures": len(df),
            "developed": self.captures.accepted,
            "rejected": self.captures.rejected,
            "errors": self.captures.errors + self.refs.errors,
            "references": self.refs.accepted,
            "references_rejected": self.refs.rejected,
            "no_face": int(sum(1 for n in n_faces if not n)),
            "decoders": decoders,
            "seconds": round(self.seconds, 2),
        }


def _check_record(out: Path, record: dict[str, Any]) -> None:
    path = out / RECORD_NAME
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old.get("salt_fingerprint") != record.get("salt_fingerprint"):
            raise BadInputError(f"{out} holds a run made with a different pseudonymisation salt (or none); "
                                "use the same salt or another --out")
        old_listing = old.pop("listing_digest", None) if isinstance(old, dict) else None
        if old != {k: v for k, v in record.items() if k != "listing_digest"}:
            raise BadInputError(f"{out} holds a run with other inputs or settings ({path}); use a new --out")
        # a record written before listings were fingerprinted (no digest) still resumes
        if old_listing is not None and old_listing != record.get("listing_digest"):
            raise BadInputError(f"{out} holds a develop-raw run over other input files (captures or references "
                                "added, removed or changed since); use a new --out")
    prepare_out_dir(out)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _listing_digest(plan: Plan) -> str:
    """A digest of the files a run reads (each capture's and reference's key, size and mtime):
    partitions are positional over this listing, so a rerun over a changed one must be refused."""
    entries = [(f"capture/{it.key}", it.data["path"]) for it in plan.captures]
    entries += [(f"ref/{it.key}", it.data["path"]) for it in plan.refs]
    return listing_digest(entries)


def run_develop_raw(
    captures: Path,
    refs: Path,
    out: Path,
    *,
    config: InsceneConfig | None = None,
    groups: Path | None = None,
    detector: str | None = None,
    partition_size: int = DEFAULT_PARTITION_SIZE,
    cluster: Any = None,
    console: Console | None = None,
    pseudonymise: bool = False,
    salt: bytes | None = None,
) -> DevelopRawResult:
    """Develop ``CAPTURES/<identity>/*`` with references ``REFS/<identity>/*`` into a test split.

    Args:
        captures: folder of identity folders of RAW files.
        refs: folder of identity folders of reference images.
        out: output dataset folder (created; a rerun with the same inputs and settings resumes).
        config: settings (``config.raw`` develops, ``config.imageio.max_pixels`` guards decoding).
        groups: optional CSV/YAML tagging captures (see :func:`load_groups`).
        detector: face detector name (default ``config.faces.detector``).
        partition_size: files per partition (= per shard, and the unit of parallel work).
        cluster: ``ClusterOptions`` to run on Dask workers; None runs in this process.
        console: where to print progress and the summary.
        pseudonymise: publishable identities (``--pseudonymise``, as filter-real): identity ids,
            keys and sources become HMAC-SHA256 pseudonyms (see :func:`plan_inputs`); the run
            record keeps only a keyed digest of the input folders and ``--groups`` and the salt's
            fingerprint, never the salt.
        salt: the pseudonymisation secret (required with ``pseudonymise``).

    Raises:
        BadInputError: missing folders, no captures, no salt with ``pseudonymise``, or ``out``
            holding a run with other settings or another salt.
    """
    console = console or Console()
    config = config or InsceneConfig()
    settings = config.raw
    detector = detector or config.faces.detector
    if partition_size < 1:
        raise BadInputError(f"--partition-size must be >= 1, got {partition_size}")
    if settings.output_format == "jpeg" and settings.output_bps == 16:
        raise BadInputError("JPEG holds 8 bits per sample: use --format png with --bits 16")
    captures, refs, out = Path(captures), Path(refs), Path(out)
    for folder in (captures, refs):
        if folder.is_dir() and out.resolve() == folder.resolve():
            raise BadInputError("--out must differ from the input folders")
    pseudonymiser = None
    if pseudonymise:
        if salt is None:
            raise BadInputError("--pseudonymise needs a salt (--salt-file or $INSCENE_PSEUDONYM_SALT)")
        pseudonymiser = Pseudonymiser(salt)
    group_tags = load_groups(groups) if groups else {}
    plan = plan_inputs(captures, refs, group_tags, pseudonymiser)
    t0 = time.perf_counter()
    inputs: dict[str, Any] = {"captures": str(captures.resolve()), "refs": str(refs.resolve()), "groups": group_tags}
    if pseudonymiser is not None:  # folder and file names may name people: a keyed digest only
        digest = pseudonymiser.digest("develop-raw-inputs", json.dumps(inputs, sort_keys=True))
        inputs = {k: "<pseudonymised>" for k in inputs} | {"inputs_digest": digest,
                                                           "salt_fingerprint": pseudonymiser.fingerprint}
    listing = _listing_digest(plan)
    if pseudonymiser is not None:  # keyed, like the input folders above
        listing = pseudonymiser.digest("develop-raw-listing", listing)
    record = {
        **inputs,
        "listing_digest": listing,
        "detector": detector,
        "partition_size": partition_size,
        "settings": {k: v for k, v in config.flat().items() if k.startswith(("raw.", "imageio."))},
    }
    _check_record(out, record)
    max_pixels = config.imageio.max_pixels
    fmt = settings.output_format

    client = None
    try:
        if cluster is not None:
            from inscene.runtime import make_client

            client = make_client(cluster)
        console.print(f"[bold]inscene develop-raw[/] {len(plan.refs)} references -> {out}/{ID_SPLIT}")
        ref_summary = run_stages(
            [ReferenceStage(max_pixels), FaceStage(detector), EncodeStage(ID_SPLIT, ID_SUBSET, "ref")],
            plan.refs, out / "decisions" / f"{ID_SPLIT}-{ID_SUBSET}", ShardSink(str(out), ID_SPLIT, ID_SUBSET),
            partition_size=partition_size, client=client, description="references",
        )
        _gate_identities(plan, ref_summary, refs, show_paths=pseudonymiser is None)
        console.print(f"[bold]inscene develop-raw[/] {len(plan.captures)} captures -> {out}/{TEST_SPLIT}")
        cap_summary = run_stages(
            [
                IdentityStage(),
                DevelopStage(settings, max_pixels),
                FaceStage(detector),
                EncodeStage(TEST_SPLIT, TEST_SUBSET, "lq", fmt, settings.jpeg_quality),
            ],
            plan.captures, out / "decisions" / f"{TEST_SPLIT}-{TEST_SUBSET}",
            ShardSink(str(out), TEST_SPLIT, TEST_SUBSET),
            partition_size=partition_size, client=client, description="captures",
        )
    finally:
        if client is not None:
            from inscene.runtime import close_client

            close_client(client)
    from inscene.shards import write_index

    write_index(out)
    result = DevelopRawResult(out, cap_summary, ref_summary, plan, time.perf_counter() - t0)
    console.print(_summary_table(result))
    return result


def _gate_identities(plan: Plan, refs: RunSummary, refs_root: Path, *, show_paths: bool = True) -> None:
    """Mark captures whose identity has no usable reference (they become rejection rows).

    ``show_paths=False`` (pseudonymised runs) keeps the reference folder's name out of the reason.
    """
    df = refs.decisions
    usable: dict[str, int] = {}
    rejected: dict[str, int] = {}
    by_source = {it.source: it.data["identity"] for it in plan.refs}
    for _, row in df.iterrows():
        ident = by_source.get(str(row["source"]))
        if ident is None:
            continue
        target = usable if bool(row["accepted"]) else rejected
        target[ident] = target.get(ident, 0) + 1
    for item in plan.captures:
        ident = item.data["identity"]
        if not ident or item.data.get("problem"):
            continue
        if usable.get(ident, 0) == 0:
            if rejected.get(ident):
                item.data["problem"] = (
                    f"identity {ident!r} has no usable reference image ({rejected[ident]} rejected, see the "
                    f"{ID_SPLIT}-{ID_SUBSET} decision log)"
                )
            elif show_paths:
                item.data["problem"] = f"identity {ident!r} has no reference images in {refs_root / ident}"
            else:
                item.data["problem"] = f"identity {ident!r} has no reference images in --refs"


def _summary_table(result: DevelopRawResult) -> Table:
    s = result.summary()
    table = Table(title="inscene develop-raw", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("captures", str(s["captures"]))
    table.add_row("developed", str(s["developed"]))
    for dec, n in sorted(s["decoders"].items()):
        table.add_row("  decoder", f"{dec} x{n}")
    table.add_row("  without a detected face (kept, no_face)", str(s["no_face"]))
    table.add_row("rejected", str(s["rejected"]))
    table.add_row("references stored", str(s["references"]))
    table.add_row("references rejected", str(s["references_rejected"]))
    for source, stage, reason in result.rejections():
        where = source if source.startswith("pseudonymised:") else f"{Path(source).parent.name}/{Path(source).name}"
        table.add_row(f"  {where}", f"{stage}: {reason}")
    if result.plan.ignored:
        table.add_row("ignored (not RAW / not an image)", ", ".join(result.plan.ignored[:8])
                      + (" ..." if len(result.plan.ignored) > 8 else ""))
    if result.plan.refs_without_captures:
        table.add_row("references without captures (skipped)", ", ".join(result.plan.refs_without_captures))
    if result.plan.unused_groups:
        table.add_row("--groups entries matching no capture", ", ".join(result.plan.unused_groups))
    table.add_row("errors", str(s["errors"]))
    table.add_row("dataset", str(result.out))
    table.add_row("seconds", f"{s['seconds']:.1f}")
    return table


def hf_splits(root: Path) -> dict[str, Any]:
    """Load each split of a develop-raw dataset with HF ``datasets``, one ``load_dataset`` per split.

    HF infers features from the first tar of one call; the test split (``lq.png``) and the identity
    split (``ref.png``) have different members, so they are separate calls (and separate configs
    in a dataset card).
    """
    import datasets

    from inscene.shards import hf_data_files

    datasets.disable_progress_bars()
    out = {}
    for split, files in hf_data_files(root).items():
        out[split] = datasets.load_dataset(
            "webdataset", data_files={split: files}, split=split, cache_dir=str(Path(root).parent / ".hf-cache")
        )
    return out


# ---- demo ---------------------------------------------------------------------------------------


def make_demo_inputs(folder: Path, *, size: int = 320) -> tuple[Path, Path]:
    """Write a tiny capture set: one identity (scikit-image's astronaut) in three DNG flavours
    (uncompressed Bayer at ISO 3200; JPEG-XL Bayer at ISO 1600 and JPEG-XL LinearRaw at ISO 800 when
    imagecodecs has JPEG XL, else uncompressed), a truncated DNG, and two references.

    Returns:
        ``(captures, refs)`` folders.
    """
    import skimage.data

    from inscene.dng import rgb8_to_dng
    from inscene.raw import jpegxl_available

    folder = Path(folder)
    cap = folder / "captures" / "astronaut"
    ref = folder / "refs" / "astronaut"
    cap.mkdir(parents=True, exist_ok=True)
    ref.mkdir(parents=True, exist_ok=True)
    photo = skimage.data.astronaut()
    scene = photo[:size, 64 : 64 + size]
    jxl = "jpegxl" if jpegxl_available() else "none"
    files = {
        cap / "IMG_0001.dng": rgb8_to_dng(scene, iso=3200, exposure_time=1 / 120, noise=24, seed=1),
        cap / "IMG_0002.dng": rgb8_to_dng(scene, iso=1600, compression=jxl, noise=12, seed=2),
        cap / "IMG_0003.dng": rgb8_to_dng(scene, iso=800, cfa_pattern=None, compression=jxl, noise=6, seed=3),
    }
    files[cap / "IMG_0004.dng"] = files[cap / "IMG_0001.dng"][: len(files[cap / "IMG_0001.dng"]) // 2]
    files[ref / "gallery_01.jpg"] = imageio.encode_image(photo[:256, 128:384], "jpeg", quality=95)
    files[ref / "gallery_02.png"] = imageio.encode_image(photo[::2, ::2], "png")
    for path, data in files.items():
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    return folder / "captures", folder / "refs"


def demo_step(workdir: Path) -> dict[str, Any]:
    """develop-raw on generated DNGs (incl. JPEG-XL ones), in this process, offline, in seconds.

    Returns:
        Summary numbers: captures, developed, rejected, references, faces found, decoders used,
        rows HF ``datasets`` loads per split, seconds.
    """
    workdir = Path(workdir)
    captures, refs = make_demo_inputs(workdir / "raw-inputs")
    result = run_develop_raw(captures, refs, workdir / "raw-dataset", partition_size=4, console=Console(quiet=True))
    summary = result.summary()
    loaded = hf_splits(workdir / "raw-dataset")
    df = result.captures.decisions
    summary.update(
        faces=int(df["m.n_faces"].fillna(0).sum()) if "m.n_faces" in df else 0,
        hf_rows={k: len(v) for k, v in loaded.items()},
        dataset=str(workdir / "raw-dataset"),
    )
    return summary

