"""``inscene restorer prepare-pairs``: Stage I face pairs with degradation labels for FaDeX (§3.1, §3.2).

Input: a dataset written by ``inscene degrade`` (per sample: the clean ``hq.<ext>``, K LQ versions
``lq{k}.png`` and their replayable operators ``lq{k}.json``). For each clean image a and each of its
operators G_{a,k}:

* the **own pair**: Stage I on the stored LQ_{a,k} (detect, align, Ref-FR, inverse warp);
* ``share`` **shared pairs** (§3.2: "sampling two clean images I_a, I_b and applying the same G"):
  G_{a,k} is applied again, exactly (the parameters are replayable), to ``share`` other clean images
  b of the same split/subset, and Stage I runs on each G_{a,k}(I_b).

Every pair is stored as its own sample: ``hq.png`` (x_HQ, Ref-FR output warped back), ``lq.png``
(x_LQ), ``gt.png`` (the ground-truth crop in the same box: the trainer's GT pairs, §3.2) and
``params.json`` (G), with metadata including ``label``: a hash of G's parameters, so two pairs share a
label exactly when they were made with the same operator. Partners are chosen by a seeded hash of the
keys, so the output depends only on the input, the options and the seed.

Where a pair's face comes from (``landmarks``): ``lq`` detects in the LQ (the paper's Stage I),
``hq`` uses the clean image's face (stored ``faces`` metadata, else detected once), ``auto`` (default)
detects in the LQ and falls back to the clean image's face when a heavy degradation hides it (LQs are
stored at the HQ's size, so its coordinates hold). Images without a usable face are skipped, or with
``no_face="center"`` (``gt``/``passthrough`` only) give a pair from their centred square: not the
paper's face pairs, but scene content the small CPU recipe trains on too.

Runs on the stage runner (:func:`inscene.stages.run_stages`): one output shard and one decision log
per partition, Dask-parallel, resumable.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from inscene import imageio
from inscene.errors import BadInputError
from inscene.schema import DegradationParams, Face
from inscene.stages import Item, Rejection, RunSummary, run_stages

__all__ = ["PairOptions", "PairStage", "PairsResult", "degradation_label", "list_pair_items", "run_prepare_pairs"]

LANDMARK_MODES = ("auto", "lq", "hq")
NO_FACE_MODES = ("skip", "center")
_IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


def degradation_label(params: DegradationParams) -> str:
    """The operator's identity: 16 hex digits of a hash of its parameters (the sampling seed and
    the record's schema version excluded), so equal operators get equal labels."""
    d = params.model_dump(mode="json")
    d.pop("seed", None)
    d.pop("schema_version", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PairOptions:
    """How pairs are made; recorded in the output's ``pairs.json``.

    Attributes:
        ref_fr: Ref-FR backend (``faceme``, ``gt``, ``passthrough``).
        ref_fr_path: ``faceme``: its checkout (default: the ``inscene weights`` lookup).
        detector: face detector (default ``faces.detector``).
        share: other clean images each operator is also applied to (0: own pairs only).
        landmarks: ``auto``, ``lq`` or ``hq`` (see the module docstring).
        no_face: ``skip`` or ``center``.
        refs: identity references: a folder with one sub-folder of photos per ``identity_id``
            (``faceme`` needs them).
        seed: seed of the partner choice.
        device: torch device of the replayed degradations.
        threads: torch threads per process (0: one per Dask worker, torch's default in-process).
            Pairs are small images: one thread is fastest on a busy machine (measured on 160 px
            images with other jobs on the 2 cores: 0.03 s per replayed degradation with 1 thread,
            0.38 s with 2).
    """

    ref_fr: str = "gt"
    ref_fr_path: Path | None = None
    detector: str | None = None
    share: int = 3
    landmarks: str = "auto"
    no_face: str = "skip"
    refs: Path | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 0

    def check(self) -> None:
        """Raise :class:`BadInputError` on inconsistent options."""
        from restorer.reffr import create_ref_fr, list_ref_fr

        if self.ref_fr not in list_ref_fr():
            raise BadInputError(f"unknown Ref-FR backend {self.ref_fr!r}; known: {', '.join(list_ref_fr())}")
        if self.share < 0:
            raise BadInputError(f"--share must be >= 0, got {self.share}")
        if self.landmarks not in LANDMARK_MODES:
            raise BadInputError(f"--landmarks must be one of {', '.join(LANDMARK_MODES)}, got {self.landmarks!r}")
        if self.no_face not in NO_FACE_MODES:
            raise BadInputError(f"--no-face must be one of {', '.join(NO_FACE_MODES)}, got {self.no_face!r}")
        backend = create_ref_fr(self.ref_fr)
        if self.no_face == "center" and not backend.band_limited:
            raise BadInputError(f"--no-face center needs a gt or passthrough Ref-FR, not {self.ref_fr!r}")
        if backend.needs_references and self.refs is None:
            raise BadInputError(f"Ref-FR {self.ref_fr!r} needs identity references: give --refs DIR")

    def record(self) -> dict[str, Any]:
        """JSON-friendly options; ``detector`` is the resolved backend (e.g. ``dlib-hog+dlib-shape68``)."""
        d = asdict(self)
        d.pop("threads")  # speed only: a rerun may change it
        for k in ("ref_fr_path", "refs"):
            d[k] = None if d[k] is None else str(d[k])
        d["detector"] = self.detector_backend()
        return d

    def detector_backend(self) -> str:
        """The face detector's backend name (``faces.detector`` when none was given); builds no model."""
        from inscene.config import FaceSettings
        from inscene.faces import create_detector

        return create_detector(self.detector or FaceSettings().detector).backend


# ---- reading the degraded dataset -------------------------------------------------------------

_TAR_INDEX: dict[str, dict[str, tuple[int, int]]] = {}


def _tar_index(path: str) -> dict[str, tuple[int, int]]:
    idx = _TAR_INDEX.get(path)
    if idx is None:
        with tarfile.open(path, "r:") as tf:
            idx = {m.name: (m.offset_data, m.size) for m in tf.getmembers() if m.isfile()}
        _TAR_INDEX[path] = idx
    return idx


def read_member(tar: str, name: str) -> bytes:
    """One member's bytes, read at its offset (the tar's member index is cached per process)."""
    try:
        off, size = _tar_index(tar)[name]
    except KeyError:
        raise BadInputError(f"shard {tar} has no member {name}") from None
    with open(tar, "rb") as fh:
        fh.seek(off)
        data = fh.read(size)
    if len(data) != size:
        raise BadInputError(f"shard {tar}: member {name} is truncated")
    return data


def _hq_field(fields: list[str]) -> str | None:
    for stem in ("hq", "gt"):
        for ext in _IMAGE_EXTS:
            if f"{stem}.{ext}" in fields:
                return f"{stem}.{ext}"
    return None


def _partners(keys: list[str], index: int, share: int, seed: int) -> list[int]:
    n = len(keys)
    if n < 2 or share <= 0:
        return []
    digest = hashlib.sha256(f"{seed}/{keys[index]}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    offsets = rng.choice(np.arange(1, n), size=min(share, n - 1), replace=False)
    return [int((index + o) % n) for o in offsets]


def list_pair_items(
    root: Path, split: str | None, subset: str | None, share: int, seed: int
) -> dict[tuple[str, str], list[Item]]:
    """One item per clean image with LQ versions, per (split, subset), with its partners."""
    from inscene.shards import shard_paths

    groups: dict[tuple[str, str], list[tuple[str, str, str, list[int], bool]]] = {}
    for tar in shard_paths(root, split):
        sub = tar.name.rsplit("-", 1)[0]
        if subset is not None and sub != subset:
            continue
        by_key: dict[str, list[str]] = {}
        for name in _tar_index(str(tar)):
            key, _, fld = name.partition(".")
            by_key.setdefault(key, []).append(fld)
        for key in sorted(by_key):
            fields = by_key[key]
            hq = _hq_field(fields)
            versions = sorted(int(f[2:-4]) for f in fields if f.startswith("lq") and f.endswith(".png")
                              and f[2:-4].isdigit() and f"lq{f[2:-4]}.json" in fields)
            if hq is None or not versions:
                continue
            groups.setdefault((tar.parent.name, sub), []).append((key, str(tar), hq, versions, "json" in fields))
    out: dict[tuple[str, str], list[Item]] = {}
    for gk, rows in groups.items():
        rows.sort(key=lambda r: r[0])
        keys = [r[0] for r in rows]
        items = []
        for i, (key, tar, hq, versions, has_meta) in enumerate(rows):
            item = Item(key=key, source=f"{tar}#{key}")
            partners = [{"key": rows[j][0], "tar": rows[j][1], "hq": rows[j][2], "meta": rows[j][4]}
                        for j in _partners(keys, i, share, seed)]
            item.data.update(tar=tar, hq=hq, versions=versions, has_meta=has_meta, partners=partners)
            items.append(item)
        out[gk] = items
    return out


# ---- the stage -----------------------------------------------------------------------------------


@dataclass
class _Scene:
    key: str
    hq: np.ndarray
    meta: dict[str, Any]
    face: Face | None = None
    face_known: bool = False


def _meta_faces(meta: dict[str, Any]) -> list[Face]:
    try:
        return [Face.model_validate(f) for f in json.loads(meta.get("faces") or "[]")]
    except Exception:  # noqa: BLE001 - foreign metadata: detect instead
        return []


def _crop_box_center(h: int, w: int) -> tuple[int, int, int, int]:
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return x0, y0, x0 + s, y0 + s


@dataclass
class PairStage:
    """Decode the clean image and its LQs, replay each operator on the partners, run Stage I."""

    options: PairOptions
    split: str
    subset: str
    max_pixels: int = imageio.DEFAULT_MAX_PIXELS
    name: str = "pairs"
    resources: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from restorer.reffr import create_ref_fr

        if create_ref_fr(self.options.ref_fr).uses_gpu and not self.resources:
            self.resources = {"GPU": 1}

    def setup(self) -> None:
        """Build the detector and the Ref-FR backend (weights are located here, once per worker)."""
        import torch

        from restorer.stage1 import Stage1

        opts = self.options
        ref_opts: dict[str, Any] = {}
        if opts.ref_fr == "faceme" and opts.ref_fr_path is not None:
            ref_opts["path"] = opts.ref_fr_path
        self._stage1 = Stage1(opts.ref_fr, detector=opts.detector or "default", ref_fr_opts=ref_opts)
        self._stage1.ref_fr.load()
        self._refs: dict[str, list[np.ndarray]] = {}
        self._hq_faces: dict[str, Face | None] = {}
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        else:
            try:  # one torch thread per Dask worker process: the workers already fill the cores
                from distributed import get_worker

                get_worker()
                torch.set_num_threads(1)
            except (ImportError, ValueError):
                pass

    # -- helpers ---------------------------------------------------------------------------------

    def _scene(self, key: str, tar: str, hq: str, has_meta: bool) -> _Scene:
        rgb = imageio.decode_image(read_member(tar, f"{key}.{hq}"), max_pixels=self.max_pixels)
        meta = json.loads(read_member(tar, f"{key}.json")) if has_meta else {}
        return _Scene(key, rgb, meta)

    def _hq_face(self, scene: _Scene) -> Face | None:
        if not scene.face_known:
            if scene.key in self._hq_faces:  # partners recur across items: detect each clean image once
                scene.face = self._hq_faces[scene.key]
            else:
                faces = _meta_faces(scene.meta)
                scene.face = max(faces, key=lambda f: f.area) if faces else self._stage1.find_face(scene.hq)
                if len(self._hq_faces) > 4096:
                    self._hq_faces.clear()
                self._hq_faces[scene.key] = scene.face
            scene.face_known = True
        return scene.face

    def _face_for(self, lq: np.ndarray, scene: _Scene) -> tuple[Face | None, str]:
        mode = self.options.landmarks
        if mode == "hq":
            return self._hq_face(scene), "hq"
        if mode == "auto":
            hf = self._hq_face(scene)
            if hf is None:  # no face in the clean image: none to find in its degraded versions
                return None, "hq"
        face = self._stage1.find_face(lq)
        if face is not None and not self._stage1._usable(face):
            return face, "lq"
        if mode == "auto":
            return hf, "hq"
        return face, "lq"

    def _references(self, identity: str | None) -> list[np.ndarray]:
        if not self._stage1.ref_fr.needs_references:
            return []
        if not identity or self.options.refs is None:
            return []
        if identity not in self._refs:
            folder = Path(self.options.refs) / identity
            photos = sorted(p for p in folder.glob("*") if p.suffix.lower().lstrip(".") in _IMAGE_EXTS) \
                if folder.is_dir() else []
            imgs = [imageio.decode_image(p, max_pixels=self.max_pixels) for p in photos]
            self._refs[identity] = self._stage1.align_references(imgs)
        return self._refs[identity]

    # -- the call ----------------------------------------------------------------------------------

    def __call__(self, item: Item) -> Item | Rejection:
        from inscene.degradations import apply, load_params
        from restorer.stage1 import Stage1Job

        d = item.data
        scene = self._scene(item.key, d["tar"], d["hq"], d["has_meta"])
        partners = [self._scene(p["key"], p["tar"], p["hq"], p["meta"]) for p in d["partners"]]
        h, w = scene.hq.shape[:2]
        item.measured.update(height=int(h), width=int(w), versions=len(d["versions"]), partners=len(partners))
        jobs: list[tuple[str, int, _Scene, np.ndarray, DegradationParams, str]] = []
        for k in d["versions"]:
            params = load_params(read_member(d["tar"], f"{item.key}.lq{k}.json"))
            lq = imageio.decode_image(read_member(d["tar"], f"{item.key}.lq{k}.png"), max_pixels=self.max_pixels)
            jobs.append((f"{item.key}-v{k}", k, scene, self._to_scene_size(lq, scene.hq), params, "own"))
            for j, other in enumerate(partners):
                replay = self._to_scene_size(apply(other.hq, params, device=self.options.device), other.hq)
                jobs.append((f"{item.key}-v{k}-p{j}", k, other, replay, params, "shared"))
        pairs: list[tuple[str, dict[str, bytes], dict[str, Any]]] = []
        reasons: dict[str, int] = {}
        prepared = []
        s1_jobs = []
        for key, k, sc, lq, params, kind in jobs:
            face, source = self._face_for(lq, sc)
            identity = sc.meta.get("identity_id") or None
            refs = self._references(identity)
            if self._stage1.ref_fr.needs_references and not refs:
                reasons["no references"] = reasons.get("no references", 0) + 1
                continue
            if face is None or self._stage1._usable(face):
                if self.options.no_face == "center":
                    pairs.append(self._center_pair(key, k, sc, lq, params, kind, item.key))
                else:
                    why = self._stage1._usable(face)
                    reasons[why] = reasons.get(why, 0) + 1
                continue
            prepared.append((key, k, sc, lq, params, kind, source))
            s1_jobs.append(Stage1Job(lq, refs, sc.hq, face, identity))
        results = self._stage1.run_many(s1_jobs) if s1_jobs else []
        for (key, k, sc, _lq, params, kind, source), res in zip(prepared, results, strict=True):
            if not res.ok:
                reasons[res.reason] = reasons.get(res.reason, 0) + 1
                continue
            meta = self._pair_meta(key, k, sc, params, kind, item.key, source, res.box, res.summary().get("matrix"))
            members = self._members(res.x_hq, res.x_lq, res.x_gt, params)
            pairs.append((key, members, meta))
        item.measured["pairs"] = len(pairs)
        item.measured["skipped"] = sum(reasons.values())
        if reasons:
            item.measured["skip_reasons"] = json.dumps(reasons, sort_keys=True)
        item.backends["ref_fr"] = self._stage1.ref_fr.name
        if self._stage1.detector is not None:
            item.backends["detector"] = self._stage1.detector.backend
        if not pairs:
            top = max(reasons, key=reasons.get) if reasons else "no LQ versions"
            return Rejection(self.name, f"no usable face pair ({top})")
        item.data = {"pairs": pairs}
        return item

    @staticmethod
    def _to_scene_size(lq: np.ndarray, hq: np.ndarray) -> np.ndarray:
        if lq.shape == hq.shape:
            return lq
        import cv2

        # an ``--lq-size lq`` dataset: back to the scene's size (bicubic, as S3Diff's resize_lq)
        return cv2.resize(lq, (hq.shape[1], hq.shape[0]), interpolation=cv2.INTER_CUBIC)

    def _center_pair(self, key, k, sc, lq, params, kind, operator_key):
        x0, y0, x1, y1 = _crop_box_center(*lq.shape[:2])
        x_lq = np.ascontiguousarray(lq[y0:y1, x0:x1])
        x_gt = np.ascontiguousarray(sc.hq[y0:y1, x0:x1])
        x_hq = x_gt if self._stage1.ref_fr.needs_ground_truth else x_lq
        meta = self._pair_meta(key, k, sc, params, kind, operator_key, "center", (x0, y0, x1, y1), None)
        return key, self._members(x_hq, x_lq, x_gt, params), meta

    @staticmethod
    def _members(x_hq, x_lq, x_gt, params: DegradationParams) -> dict[str, bytes]:
        members = {"hq.png": imageio.encode_image(x_hq, "png"), "lq.png": imageio.encode_image(x_lq, "png")}
        if x_gt is not None:
            members["gt.png"] = imageio.encode_image(x_gt, "png")
        members["params.json"] = params.model_dump_json().encode()
        return members

    def _pair_meta(self, key, k, sc: _Scene, params, kind, operator_key, source, box, matrix) -> dict[str, Any]:
        x0, y0, x1, y1 = (int(v) for v in box)
        return {
            "key": key,
            "split": self.split,
            "subset": self.subset,
            "label": degradation_label(params),
            "scene_key": sc.key,
            "operator_key": operator_key,
            "version": int(k),
            "kind": kind,
            "ref_fr": self._stage1.ref_fr.name,
            "face_source": source,
            "box": json.dumps([x0, y0, x1, y1]),
            "matrix": json.dumps(matrix) if matrix is not None else "",
            "width": x1 - x0,
            "height": y1 - y0,
            "identity_id": sc.meta.get("identity_id") or "",
            "pipeline": params.pipeline,
        }


@dataclass
class PairShardSink:
    """Writes one partition's pairs to one shard (shard index = partition index)."""

    root: str
    split: str
    subset: str

    def __call__(self, partition: int, items: list[Item]) -> None:
        from inscene.shards import ShardWriter

        n = sum(len(it.data["pairs"]) for it in items)
        with ShardWriter(self.root, self.split, self.subset, start_shard=partition, max_count=max(n, 1),
                         max_bytes=2**62, overwrite=True) as writer:
            for it in items:
                for key, members, meta in it.data["pairs"]:
                    writer.write(key, members, meta)


# ---- the run --------------------------------------------------------------------------------------


@dataclass
class PairsResult:
    """What a run produced."""

    out: Path
    summaries: dict[tuple[str, str], RunSummary]
    seconds: float

    @property
    def pairs(self) -> int:
        """Pairs written (all partitions, including resumed ones)."""
        total = 0
        for s in self.summaries.values():
            if "m.pairs" in s.decisions:
                total += int(s.decisions.loc[s.decisions["accepted"].astype(bool), "m.pairs"].fillna(0).sum())
        return total

    @property
    def ok(self) -> bool:
        """True when no image failed with an error."""
        return all(s.errors == 0 for s in self.summaries.values())


def run_prepare_pairs(
    data: Path,
    out: Path,
    options: PairOptions,
    *,
    split: str | None = None,
    subset: str | None = None,
    partition_size: int = 50,
    cluster: Any = None,
    console: Console | None = None,
) -> PairsResult:
    """Make the face-pair shards of a degraded dataset.

    Args:
        data: a dataset folder written by ``inscene degrade``.
        out: output dataset folder (created; reruns resume).
        options: see :class:`PairOptions`.
        split: only this split.
        subset: only this subset.
        partition_size: clean images per partition (= per output shard).
        cluster: ``ClusterOptions`` to run on Dask workers; None runs in this process.
        console: where to print.
    """
    console = console or Console()
    options.check()
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise BadInputError(f"not a folder: {data}")
    if out.resolve() == data.resolve():
        raise BadInputError("--out must differ from the input folder")
    t0 = time.perf_counter()
    groups = list_pair_items(data, split, subset, options.share, options.seed)
    if not any(groups.values()):
        raise BadInputError(f"no degraded samples (hq.* + lq<k>.png + lq<k>.json) in {data}: run `inscene degrade`")
    out.mkdir(parents=True, exist_ok=True)
    record = {"input": str(data), **options.record(), "partition_size": partition_size}
    rec_path = out / "pairs.json"
    saved = json.loads(rec_path.read_text()) if rec_path.exists() else None
    if saved is not None and saved.get("detector") is None:  # written before the backend was recorded
        saved["detector"] = record["detector"]
    if saved is not None and saved != record:
        raise BadInputError(f"{out} holds a run with other options ({rec_path}); use a new --out to change them")
    rec_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    client = None
    summaries: dict[tuple[str, str], RunSummary] = {}
    try:
        if cluster is not None:
            from inscene.runtime import make_client

            client = make_client(cluster)
        for (sp, sub), items in sorted(groups.items()):
            console.print(f"[bold]inscene restorer prepare-pairs[/] {sp}/{sub}: {len(items)} images, "
                          f"Ref-FR {options.ref_fr}, share {options.share} -> {out}")
            summaries[(sp, sub)] = run_stages(
                [PairStage(options, sp, sub)], items, out / "decisions" / f"{sp}-{sub}",
                PairShardSink(str(out), sp, sub), partition_size=partition_size, client=client,
                description="pairs",
            )
    finally:
        if client is not None:
            from inscene.runtime import close_client

            close_client(client)
    from inscene.shards import write_index

    write_index(out)
    result = PairsResult(out, summaries, time.perf_counter() - t0)
    for (sp, sub), s in summaries.items():
        console.print(f"{sp}/{sub}: {s.accepted} images gave pairs, {s.rejected} rejected, {s.errors} errors "
                      f"({s.skipped_partitions}/{s.partitions} partitions resumed)")
        for reason, n in s.by_reason.items():
            console.print(f"  rejected {n}: {reason}")
    console.print(f"{result.pairs} pairs in {result.seconds:.1f} s")
    return result
