"""The evaluator: score a method on a split, per image, cached, in parallel; aggregate to rows.

Provenance: Face2Scene (arXiv 2603.16570) §4.1-4.3, Tables 2-4 and 7 (metrics per split), Table 3
(variants: "GT Face Inserted" composites the GT face into the prediction with a soft mask,
``M * I_GT + (1 - M) * P``; "Face only" computes the metrics on the face region).

Flow of :func:`evaluate`:

1. list the split (keys and content hashes from manifests: nothing decoded) and the method's
   predictions (missing, extra, duplicate files are named per key);
2. check every metric once: a learned metric without weights becomes an ``n/a`` column naming the
   missing file, never a substitute;
3. look every (sample, variant, metric) up in the score cache (:mod:`benchmarks.cache`) and keep
   only what is missing: a rerun computes nothing, a new method only its own rows;
4. score the missing ones in partitions, in this process or on Dask workers (partitions that use
   learned metrics ask for the ``GPU`` resource when the cluster has GPU workers); every partition's
   rows are appended to the cache as it finishes;
5. aggregate each variant to an :class:`EvalRow` (means, bootstrap 95% CIs, counts), written as
   JSON under ``results/rows/`` for ``inscene leaderboard``.

A row is *complete* only when every sample has a prediction that decoded, matched the GT size and
got every available metric. Otherwise the row says ``incomplete``, lists each problem by key, and
its means are over the images that were scored (shown with their count): never a silent average
over a subset.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cache import SCORE_KEY, HashMemo, ScoreCache
from benchmarks.methods import Method, PredictionError, ResizeMethod
from benchmarks.metrics import (
    DEFAULT_METRICS,
    MetricSpec,
    MetricStatus,
    check_metric,
    get_metric,
)
from benchmarks.splits import DataSource, EvalSample, FolderSource, Problem, SampleRef
from inscene.errors import BadInputError

__all__ = [
    "DEFAULT_RESULTS",
    "VARIANTS",
    "EvalReport",
    "EvalRow",
    "MetricSummary",
    "apply_variant",
    "evaluate",
    "face_crop",
    "load_rows",
    "score_partition",
]

#: Where rows and the cache go unless told otherwise.
DEFAULT_RESULTS = Path("inscene-results")
VARIANTS = ("full", "face-only", "gt-face-inserted")
ROW_FORMAT = "inscene-eval-row/1"
GT_METHOD = "__gt__"  # method name under which GT images' FID features are cached
_MIN_FACE_PIXELS = 8


# --------------------------------------------------------------------------------------------
# Variants


def face_crop(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The face region ``[x1, y1, x2, y2]`` of an image (integer bounds covering the box, clipped)."""
    from inscene.quality import box_bounds

    x1, y1, x2, y2 = box_bounds(box, image.shape)
    if min(x2 - x1, y2 - y1) < _MIN_FACE_PIXELS:
        raise BadInputError(f"face box {list(box)} is smaller than {_MIN_FACE_PIXELS} pixels")
    return image[y1:y2, x1:x2]


def apply_variant(variant: str, pred: np.ndarray, sample: EvalSample) -> tuple[np.ndarray, np.ndarray | None]:
    """The (prediction, reference) pair a variant scores.

    * ``full``: the images as they are.
    * ``face-only``: both cropped to the recorded primary face box (Table 3 "Face only").
    * ``gt-face-inserted``: every recorded GT face composited into the prediction with the faces
      module's feathered mask (Table 3 "GT Face Inserted"); the reference stays the GT.

    Raises:
        BadInputError: no face recorded, or no GT where one is needed.
    """
    gt = sample.gt
    if variant == "full":
        return pred, gt
    if variant == "face-only":
        box = sample.face_box
        if box is None:
            raise BadInputError("no face box recorded for this sample")
        return face_crop(pred, box), (face_crop(gt, box) if gt is not None else None)
    if variant == "gt-face-inserted":
        if gt is None:
            raise BadInputError("GT face insertion needs the ground truth")
        faces = sample.faces
        if not faces:
            raise BadInputError("no face landmarks recorded for this sample")
        try:
            from inscene.faces.align import insert_gt_face
        except ImportError as exc:
            raise BadInputError(f"GT face insertion needs inscene.faces.align ({exc})") from exc
        return insert_gt_face(pred, gt, faces), gt
    raise BadInputError(f"unknown variant '{variant}'; known: {', '.join(VARIANTS)}")


def _faces_digest(ref: SampleRef) -> str:
    meta = {k: ref.meta.get(k) for k in ("face_box", "faces", "face_landmarks")}
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ref_hash(spec: MetricSpec, variant: str, ref: SampleRef) -> str:
    """What a score depends on besides the prediction: GT content and, for face variants, the faces."""
    parts = []
    if spec.needs_gt or variant == "gt-face-inserted":
        parts.append(ref.gt_hash)
    if variant != "full" or spec.kind == "ID":
        parts.append("faces:" + _faces_digest(ref))
    return "|".join(parts) if parts else "-"


def _gt_feature_hash(variant: str, ref: SampleRef) -> str:
    return "-" if variant != "face-only" else "faces:" + _faces_digest(ref)


# --------------------------------------------------------------------------------------------
# Rows


#: Score-cache ``detail`` of a resize method's score on a sample whose LQ already has the GT
#: size: the prediction is the LQ itself (the row then says the method equals ``lq`` here).
LQ_AT_GT_SIZE = "lq-at-gt-size"


def _resizes_lq(method: Method) -> bool:
    """An interpolation baseline (bicubic, lanczos) that resizes the LQ to the GT size."""
    return isinstance(method, ResizeMethod) and method.scale is None and method.filter != "nearest"


#: Score-cache status of an ID score on a sample without a recorded face: the sample is outside
#: the score's domain (it is counted in the cell's n/N and in its note, and does not make the row
#: incomplete), unlike ``error``.
NO_FACE = "no-face"


@dataclass
class MetricSummary:
    """One cell of a row.

    Attributes:
        status: ``ok`` (every sample scored), ``partial`` (some failed: the row is incomplete),
            ``n/a`` (cannot run here: ``reason`` says why, e.g. ``weights missing: <file>``).
        mean, ci_low, ci_high: mean over scored images and its bootstrap 95% interval (None for
            set-level FID, which has no per-image values).
        n, n_expected: images scored / samples in the split.
    """

    metric: str
    label: str
    status: str
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    n_expected: int = 0
    lower_better: bool = False
    reason: str = ""
    notes: str = ""
    version: str = ""
    backend: str = ""
    convention: str = ""

    @property
    def display_reason(self) -> str:
        return f"n/a ({self.reason})" if self.reason else "n/a"


@dataclass
class EvalRow:
    """One measured leaderboard row: a method on a split, in one variant."""

    split: str
    variant: str
    method: str
    complete: bool
    n_samples: int
    metrics: dict[str, MetricSummary]
    problems: list[Problem] = field(default_factory=list)
    source: str = "measured"
    method_info: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    notes: list[str] = field(default_factory=list)

    def status_line(self) -> str:
        """``<method> on <split> (<variant>): complete``, naming n/a metrics (``complete (10 metrics n/a:
        weights missing)``), or ``INCOMPLETE (<n> problem(s))``."""
        head = f"{self.method} on {self.split} ({self.variant}): "
        if not self.complete:
            return head + f"INCOMPLETE ({len(self.problems)} problem(s))"
        na = [m for m in self.metrics.values() if m.status == "n/a"]
        if not na:
            return head + "complete"
        why = "; ".join(sorted({m.reason.split(":")[0] for m in na if m.reason}))
        return head + f"complete ({len(na)} metric{'s' if len(na) > 1 else ''} n/a{': ' + why if why else ''})"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = ROW_FORMAT
        d["problems"] = [asdict(p) for p in self.problems]
        return _json_safe(d)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvalRow:
        d = dict(d)
        if d.pop("format", None) != ROW_FORMAT:
            raise BadInputError("not an inscene evaluation row")
        d["metrics"] = {k: MetricSummary(**v) for k, v in d["metrics"].items()}
        d["problems"] = [Problem(**p) for p in d["problems"]]
        return cls(**d)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "method"


def row_path(results: Path, split: str, variant: str, method: str) -> Path:
    return Path(results) / "rows" / _slug(split) / variant / f"{_slug(method)}.json"


def load_rows(results: str | os.PathLike, split: str | None = None) -> list[EvalRow]:
    """Every measured row saved under ``results`` (one split, or all)."""
    base = Path(results) / "rows"
    if not base.is_dir():
        return []
    pattern = f"{_slug(split)}/*/*.json" if split else "*/*/*.json"
    rows = []
    for p in sorted(base.glob(pattern)):
        try:
            rows.append(EvalRow.from_json(json.loads(p.read_text())))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInputError(f"unreadable evaluation row {p}: {exc}") from exc
    return rows


@dataclass
class EvalReport:
    """What :func:`evaluate` did."""

    rows: list[EvalRow]
    computed: int
    cached: int
    seconds: float
    paths: list[Path] = field(default_factory=list)
    #: row file -> metrics its earlier version had that this run's row lacks (the file was replaced).
    dropped: dict[Path, list[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.rows)


# --------------------------------------------------------------------------------------------
# The partition task (runs on a worker)


@dataclass
class PartitionTask:
    """Everything one worker needs to score some samples (picklable)."""

    split: str
    source: DataSource
    method: Method
    refs: list[SampleRef]
    pred_hashes: dict[str, str]
    needs: dict[str, list[tuple[str, str]]]  # key -> [(variant, metric)]; metric "fid" = pred features
    gt_feature_needs: dict[str, list[str]]  # key -> [variant] needing GT FID features
    specs: dict[str, MetricSpec]
    versions: dict[str, str]
    backends: dict[str, str]
    pretrained: bool = True
    device: str | None = None
    batch_size: int = 8
    outputs_dir: str | None = None


@dataclass
class PartitionOutput:
    scores: list[dict[str, Any]]
    features: list[dict[str, Any]]
    problems: list[Problem]


def _predict(task: PartitionTask, sample: EvalSample) -> np.ndarray:
    method = task.method
    cached: Path | None = None
    if task.outputs_dir and method.cache_outputs:
        cached = Path(task.outputs_dir) / _slug(method.name) / f"{task.pred_hashes[sample.key]}.png"
        if cached.is_file():
            from inscene.imageio import decode_image

            return decode_image(cached)
    pred = method.predict(sample)
    pred = np.asarray(pred)
    if pred.dtype != np.uint8 or pred.ndim != 3 or pred.shape[2] != 3:
        raise PredictionError("error", f"method returned {pred.dtype} {pred.shape}, expected HxWx3 uint8")
    if cached is not None:
        from inscene.imageio import encode_image

        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(encode_image(pred, "png"))
        os.replace(tmp, cached)
    return pred


def score_partition(task: PartitionTask) -> PartitionOutput:
    """Decode, predict, apply variants and score one partition; returns cache rows and problems."""
    from benchmarks import metrics as M

    scores: list[dict[str, Any]] = []
    features: list[dict[str, Any]] = []
    problems: list[Problem] = []
    refs = {r.key: r for r in task.refs}
    # (variant, metric) -> [(key, pred_v, gt_v, sample, pred_full)]
    groups: dict[tuple[str, str], list[tuple[str, np.ndarray, np.ndarray | None, EvalSample, np.ndarray]]] = {}
    gt_feats: dict[str, list[tuple[str, np.ndarray]]] = {}
    lq_at_gt: set[str] = set()  # keys whose LQ already has the GT size (resize methods only)

    def row(key: str, variant: str, metric: str, value: float, status: str = "ok", detail: str = "") -> None:
        spec = task.specs[metric]
        if status == "ok" and key in lq_at_gt:
            detail = LQ_AT_GT_SIZE
        scores.append({
            "split": task.split, "key": key, "method": task.method.name, "pred_hash": task.pred_hashes[key],
            "ref_hash": ref_hash(spec, variant, refs[key]), "variant": variant, "metric": metric,
            "version": task.versions[metric], "value": float(value), "status": status, "detail": detail,
            "backend": task.backends[metric],
        })

    for item in task.source.read(task.refs, need_lq=task.method.needs_lq):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        s = item
        try:
            pred = _predict(task, s)
        except PredictionError as exc:
            problems.append(Problem(s.key, exc.kind, exc.detail))
            continue
        except Exception as exc:  # noqa: BLE001 - a method crash is this sample's problem
            problems.append(Problem(s.key, "error", f"{task.method.name} failed: {type(exc).__name__}: {exc}"))
            continue
        if s.gt is not None and pred.shape[:2] != s.gt.shape[:2]:
            gh, gw = s.gt.shape[:2]
            problems.append(Problem(
                s.key, "resolution",
                f"prediction is {pred.shape[1]}x{pred.shape[0]}, ground truth is {gw}x{gh} "
                "(not resized: predictions must match the GT size)",
            ))
            continue
        if _resizes_lq(task.method) and s.lq is not None and s.gt is not None and s.lq.shape[:2] == s.gt.shape[:2]:
            lq_at_gt.add(s.key)
        variants = {v for v, _ in task.needs.get(s.key, [])} | set(task.gt_feature_needs.get(s.key, []))
        for variant in sorted(variants):
            try:
                pv, gv = apply_variant(variant, pred, s)
            except BadInputError as exc:
                problems.append(Problem(s.key, "no-face" if "face" in str(exc) else "error", f"{variant}: {exc}"))
                for v, metric in task.needs.get(s.key, []):
                    if v == variant:
                        row(s.key, v, metric, math.nan, "error", str(exc))
                continue
            for v, metric in task.needs.get(s.key, []):
                if v == variant:
                    groups.setdefault((variant, metric), []).append((s.key, pv, gv, s, pred))
            if variant in task.gt_feature_needs.get(s.key, []) and gv is not None:
                gt_feats.setdefault(variant, []).append((s.key, gv))

    opts = {"pretrained": task.pretrained, "device": task.device, "batch_size": task.batch_size}
    for (variant, metric), items in groups.items():
        spec = task.specs[metric]
        if spec.kind in ("FR", "NR"):
            vals = M.score_images(spec, [it[1] for it in items], [it[2] for it in items], **opts)
            for (key, *_), v in zip(items, vals, strict=True):
                if isinstance(v, Exception):
                    row(key, variant, metric, math.nan, "error", f"{type(v).__name__}: {v}")
                else:
                    row(key, variant, metric, v)
        elif spec.kind == "ID":
            for key, _pv, _gv, s, pred_full in items:
                if not s.faces:  # outside the ID score's domain, not a failure (see _aggregate)
                    row(key, variant, metric, math.nan, NO_FACE, "no face recorded for this sample")
                    continue
                try:
                    faces = s.faces
                    if s.gt is None:
                        raise BadInputError("the ID score needs the ground truth")
                    row(key, variant, metric, M.id_similarity(spec, pred_full, s.gt, faces[0]))
                except Exception as exc:  # noqa: BLE001 - e.g. a face the embedder cannot use
                    row(key, variant, metric, math.nan, "error", f"{type(exc).__name__}: {exc}")
        elif spec.kind == "SET":
            feats = M.image_features(spec, [it[1] for it in items], **opts)
            for (key, *_), f in zip(items, feats, strict=True):
                features.append(_feature_row(task, key, key_method=task.method.name,
                                             pred_hash=task.pred_hashes[key],
                                             rhash=ref_hash(spec, variant, refs[key]), variant=variant,
                                             metric=metric, feature=f))
    for variant, items in gt_feats.items():
        spec = task.specs["fid"]
        feats = M.image_features(spec, [it[1] for it in items], **opts)
        for (key, _), f in zip(items, feats, strict=True):
            features.append(_feature_row(task, key, key_method=GT_METHOD, pred_hash=refs[key].gt_hash,
                                         rhash=_gt_feature_hash(variant, refs[key]), variant=variant,
                                         metric="fid", feature=f))
    return PartitionOutput(scores, features, problems)


def _feature_row(task: PartitionTask, key: str, *, key_method: str, pred_hash: str, rhash: str, variant: str,
                 metric: str, feature: np.ndarray | Exception) -> dict[str, Any]:
    ok = not isinstance(feature, Exception)
    return {
        "split": task.split, "key": key, "method": key_method, "pred_hash": pred_hash, "ref_hash": rhash,
        "variant": variant, "metric": metric, "version": task.versions[metric],
        "feature": np.asarray(feature, np.float32).tobytes() if ok else b"",
        "status": "ok" if ok else "error",
    }


# --------------------------------------------------------------------------------------------
# The driver


def _resolve_metrics(metrics: Iterable[str] | None) -> list[MetricSpec]:
    names = list(metrics) if metrics is not None else list(DEFAULT_METRICS)
    if not names:
        raise BadInputError("no metrics selected")
    out, seen = [], set()
    for n in names:
        spec = get_metric(n)
        if spec.name not in seen:
            out.append(spec)
            seen.add(spec.name)
    return out


def _column_na(spec: MetricSpec, variant: str, source: DataSource) -> str:
    """Why a metric has no value at all in this variant/split ("" when it applies)."""
    if variant in spec.skip_variants:
        return f"not computed for {variant} (as in the paper)" if spec.name == "liqe" else f"not used for {variant}"
    if spec.needs_gt and not source.has_gt:
        return "no ground truth in this split"
    if (variant != "full" or spec.kind == "ID") and isinstance(source, FolderSource):
        return "no face boxes in folder mode"
    return ""


def evaluate(
    source: DataSource,
    method: Method,
    *,
    metrics: Iterable[str] | None = None,
    variants: Sequence[str] = ("full",),
    results: str | os.PathLike = DEFAULT_RESULTS,
    pretrained: bool = True,
    device: str | None = None,
    batch_size: int = 8,
    partition_size: int = 16,
    cluster: Any = None,
    client: Any = None,
    bootstrap: int = 1000,
    seed: int = 0,
    console: Any = None,
    hash_memo: HashMemo | None = None,
    write: bool = True,
) -> EvalReport:
    """Score ``method`` on ``source`` and write one row per variant.

    Args:
        source: the split (:class:`~benchmarks.splits.ShardSource` or ``FolderSource``).
        method: what to score (:func:`benchmarks.methods.create_method`).
        metrics: metric names (default :data:`~benchmarks.metrics.DEFAULT_METRICS`).
        variants: any of :data:`VARIANTS`.
        results: folder for ``rows/`` and ``cache/``.
        pretrained: False runs learned metrics with random weights (plumbing tests only; their
            versions say so and never mix with real scores).
        device: torch device for learned metrics.
        batch_size: images per forward pass.
        partition_size: samples per task.
        cluster: :class:`inscene.runtime.ClusterOptions` to start a Dask client when there is work
            (None: score in this process).
        client: an existing ``distributed.Client`` (wins over ``cluster``).
        bootstrap: bootstrap resamples for the 95% intervals (0: none).
        seed: bootstrap seed.
        console: rich console for progress (default stderr).
        hash_memo: file-hash memo (default: the cache folder's).
        write: write the row JSONs.
    """
    t0 = time.perf_counter()
    results = Path(results)
    for v in variants:
        if v not in VARIANTS:
            raise BadInputError(f"unknown variant '{v}'; known: {', '.join(VARIANTS)}")
    if not variants:
        raise BadInputError("no variant selected")
    specs = _resolve_metrics(metrics)
    cache = ScoreCache(results / "cache")
    memo = hash_memo if hash_memo is not None else HashMemo(cache.root)
    for obj in (source, method):
        if getattr(obj, "hash_memo", False) is None:
            obj.hash_memo = memo

    refs, src_problems = source.refs()
    if not refs:
        raise BadInputError(f"split '{source.split}' has no samples")
    method.preflight()  # a missing backend stops here, once, before any sample is scored
    method_problems = method.check(refs)

    # 1. metrics: one check each
    status: dict[str, MetricStatus] = {}
    for spec in specs:
        if all(_column_na(spec, v, source) for v in variants):
            status[spec.name] = MetricStatus(spec.name, False, reason=_column_na(spec, variants[0], source))
        else:
            status[spec.name] = check_metric(spec, pretrained=pretrained, device=device, batch_size=batch_size)
    active = [s for s in specs if status[s.name].ok]
    versions = {s.name: status[s.name].version for s in active}
    backends = {s.name: status[s.name].backend for s in active}

    # 2. predictions and cache lookups
    pred_hashes: dict[str, str] = {}
    pred_problems: list[Problem] = []
    for ref in refs:
        try:
            h = method.prediction_hash(ref)
        except OSError as exc:
            pred_problems.append(Problem(ref.key, "unreadable", str(exc)))
            continue
        if h is None:
            if method.needs_lq and not ref.lq_hash:
                pred_problems.append(Problem(ref.key, "no-lq", "the sample has no LQ input"))
            continue
        pred_hashes[ref.key] = h
    memo.save()

    hits = cache.hits("scores")
    fhits = cache.hits("features") if any(s.set_level for s in active) else set()
    needs: dict[str, list[tuple[str, str]]] = {}
    gt_needs: dict[str, list[str]] = {}
    n_cached = 0
    split = source.split
    for ref in refs:
        if ref.key not in pred_hashes:
            continue
        ph = pred_hashes[ref.key]
        for variant in variants:
            for spec in active:
                if _column_na(spec, variant, source):
                    continue
                if spec.set_level:
                    k = (split, ref.key, method.name, ph, ref_hash(spec, variant, ref), variant, spec.name,
                         versions[spec.name])
                    if k in fhits:
                        n_cached += 1
                    else:
                        needs.setdefault(ref.key, []).append((variant, spec.name))
                    gk = (split, ref.key, GT_METHOD, ref.gt_hash, _gt_feature_hash(variant, ref), variant,
                          spec.name, versions[spec.name])
                    if gk not in fhits:
                        gt_needs.setdefault(ref.key, []).append(variant)
                    continue
                k = (split, ref.key, method.name, ph, ref_hash(spec, variant, ref), variant, spec.name,
                     versions[spec.name])
                if k in hits:
                    n_cached += 1
                else:
                    needs.setdefault(ref.key, []).append((variant, spec.name))

    # 3. score what is missing
    todo = [r for r in refs if r.key in needs or r.key in gt_needs]
    worker_problems: list[Problem] = []
    n_computed = 0
    if todo:
        if client is not None or cluster is not None:  # keep every worker busy on small jobs
            n_workers = _n_workers(client, cluster)
            partition_size = max(1, min(partition_size, math.ceil(len(todo) / (2 * n_workers))))
        tasks = [
            PartitionTask(
                split=split, source=source, method=method, refs=todo[i : i + partition_size],
                pred_hashes={r.key: pred_hashes[r.key] for r in todo[i : i + partition_size]},
                needs={r.key: needs.get(r.key, []) for r in todo[i : i + partition_size]},
                gt_feature_needs={r.key: gt_needs.get(r.key, []) for r in todo[i : i + partition_size]},
                specs={s.name: s for s in active}, versions=versions, backends=backends,
                pretrained=pretrained, device=device, batch_size=batch_size,
                outputs_dir=str(results / "outputs"),
            )
            for i in range(0, len(todo), max(1, partition_size))
        ]
        for out in _run_tasks(tasks, active, cluster=cluster, client=client, console=console):
            if isinstance(out, BaseException):
                task, exc = out.args  # type: ignore[misc]
                worker_problems += [
                    Problem(r.key, "error", f"partition failed: {type(exc).__name__}: {exc}") for r in task.refs
                ]
                continue
            n_computed += len(out.scores) + len(out.features)
            cache.append(out.scores, "scores")
            if out.features:
                cache.append(_features_frame(out.features), "features")
            worker_problems += out.problems
        if len(cache.parts("scores")) > 64:
            cache.compact("scores")
        if len(cache.parts("features")) > 64:
            cache.compact("features")

    # 4. aggregate
    all_problems = _dedupe(src_problems + method_problems + pred_problems + worker_problems)
    scored_keys = [r for r in refs if r.key in pred_hashes]
    rows = []
    paths = []
    dropped: dict[Path, list[str]] = {}
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    config = {
        "metrics": [s.name for s in specs], "variants": list(variants), "pretrained": pretrained,
        "device": device, "batch_size": batch_size, "partition_size": partition_size,
        "bootstrap": bootstrap, "seed": seed,
    }
    from inscene import __version__

    for variant in variants:
        summaries, metric_problems = _aggregate(
            cache, split, method.name, variant, refs, scored_keys, pred_hashes, specs, status, source,
            bootstrap=bootstrap, seed=seed, known={p.key for p in all_problems},
        )
        problems = all_problems + metric_problems
        complete = not problems and all(m.status in ("ok", "n/a") for m in summaries.values())
        notes = []
        if _resizes_lq(method) and _all_lq_at_gt_size(cache, split, method.name, variant, scored_keys, pred_hashes):
            notes.append(
                f"{method.name} equals lq here: every LQ is stored at the GT size, so there is nothing to resize "
                "(`inscene degrade --lq-size lq` keeps the LQ small)"
            )
        row = EvalRow(
            split=split, variant=variant, method=method.name, complete=complete, n_samples=len(refs),
            metrics=summaries, problems=problems, method_info=method.describe(), data=source.describe(),
            config={**config, "inscene_version": __version__}, created=created, notes=notes,
        )
        rows.append(row)
        if write:
            path = row_path(results, split, variant, method.name)
            gone = _dropped_metrics(path, row)
            if gone:
                dropped[path] = gone
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(row.to_json(), indent=1, sort_keys=True))
            os.replace(tmp, path)
            paths.append(path)
    return EvalReport(rows, n_computed, n_cached, time.perf_counter() - t0, paths, dropped)


def _dropped_metrics(path: Path, row: EvalRow) -> list[str]:
    """Metrics the row already at ``path`` has that ``row`` lacks (none when there is no readable row)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return sorted(set(old.get("metrics") or {}) - set(row.metrics))


def _all_lq_at_gt_size(cache: ScoreCache, split: str, method: str, variant: str, scored: list[SampleRef],
                       pred_hashes: dict[str, str]) -> bool:
    """Every scored sample's cached scores say its LQ already had the GT size (nothing was resized)."""
    df = cache.table("scores")
    if df.empty or not scored:
        return False
    sub = df[(df["split"] == split) & (df["method"] == method) & (df["variant"] == variant)
             & (df["detail"] == LQ_AT_GT_SIZE)]
    marked = set(zip(sub["key"].astype(str), sub["pred_hash"].astype(str), strict=True))
    return all((r.key, pred_hashes[r.key]) in marked for r in scored)


def _features_frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    df = pd.DataFrame(rows)
    return df[[*SCORE_KEY, "feature", "status"]].assign(created=time.time())


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        k = (p.key, p.kind, p.detail)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


class _TaskFailed(Exception):
    pass


def _run_tasks(tasks: list[PartitionTask], active: list[MetricSpec], *, cluster: Any, client: Any, console: Any):
    """Yield each task's output (or a ``_TaskFailed(task, exc)``) as it finishes."""
    from inscene.runtime import close_client, gpu_resources, make_client, progress

    own = None
    if client is None and cluster is not None:
        client = own = make_client(cluster, console=console)
    try:
        if client is None:
            for task in progress(tasks, "scoring", console=console):
                try:
                    yield score_partition(task)
                except Exception as exc:  # noqa: BLE001 - reported per key by the caller
                    yield _TaskFailed(task, exc)
            return
        resources = gpu_resources(client) if wants_gpu(tasks, active) else None
        futures = client.map(
            score_partition, tasks, pure=False, resources=resources,
            key=[f"score-{i:05d}-{time.time_ns()}" for i in range(len(tasks))],
        )
        index = {f.key: t for f, t in zip(futures, tasks, strict=True)}
        for fut in progress(futures, "scoring", console=console):
            if fut.status == "error":
                yield _TaskFailed(index[fut.key], fut.exception())
            else:
                yield fut.result()
    finally:
        if own is not None:
            close_client(own)


def _n_workers(client: Any, cluster: Any) -> int:
    if client is not None:
        try:
            return max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        except Exception:  # noqa: BLE001 - only a load-balancing hint
            return 1
    n = getattr(cluster, "n_workers", None)
    if callable(n) and getattr(cluster, "cluster", "local") == "local" and not getattr(cluster, "scheduler", None):
        return int(n())
    return max(1, int(getattr(cluster, "jobs", 1) or 1) * max(1, int(getattr(cluster, "cores", 1) or 1)))


def wants_gpu(tasks: list[PartitionTask], active: list[MetricSpec]) -> bool:
    """Whether scoring partitions ask for the ``GPU`` resource: a learned metric or a GPU method."""
    return any(_metric_uses_gpu(s) for s in active) or any(t.method.uses_gpu for t in tasks)


def _metric_uses_gpu(spec: MetricSpec) -> bool:
    if spec.scorer is None:
        return spec.embedder == "arcface"
    from inscene.quality import get_scorer_info

    return get_scorer_info(spec.scorer).gpu


def bootstrap_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float | None, float | None]:
    """Percentile bootstrap 95% interval of the mean (None when fewer than 2 values or n_boot == 0)."""
    values = np.asarray(values, np.float64)
    if n_boot <= 0 or len(values) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // len(values))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _aggregate(
    cache: ScoreCache, split: str, method: str, variant: str, refs: list[SampleRef], scored: list[SampleRef],
    pred_hashes: dict[str, str], specs: list[MetricSpec], status: dict[str, MetricStatus], source: DataSource,
    *, bootstrap: int, seed: int, known: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[dict[str, MetricSummary], list[Problem]]:
    from inscene.quality import PSNR_IDENTICAL_DB

    df = cache.table("scores")
    n_expected = len(refs)
    out: dict[str, MetricSummary] = {}
    problems: list[Problem] = []
    index: dict[tuple[str, ...], tuple[float, str, str]] = {}
    if not df.empty:
        sub = df[(df["split"] == split) & (df["method"] == method) & (df["variant"] == variant)]
        for k, v, st, det in zip(
            zip(*(sub[c].astype(str) for c in ("key", "pred_hash", "ref_hash", "metric", "version")), strict=True),
            sub["value"], sub["status"], sub["detail"], strict=True,
        ):
            index[k] = (float(v), st, det)
    for spec in specs:
        st = status[spec.name]
        base = dict(metric=spec.name, label=spec.label, lower_better=spec.lower_better, n_expected=n_expected,
                    convention=spec.convention, version=st.version, backend=st.backend)
        na = _column_na(spec, variant, source)
        if na or not st.ok:
            out[spec.name] = MetricSummary(status="n/a", reason=na or st.reason, **base)
            continue
        if spec.set_level:
            out[spec.name] = _aggregate_fid(cache, split, method, variant, scored, pred_hashes, spec, st, base,
                                            problems, known)
            continue
        values: list[float] = []
        no_face = 0
        for ref in scored:
            k = (ref.key, pred_hashes[ref.key], ref_hash(spec, variant, ref), spec.name, st.version)
            got = index.get(k)
            if got is None:
                if ref.key not in known:  # e.g. a partition that failed; say so rather than shrink n
                    problems.append(Problem(ref.key, "error", f"{spec.name} ({variant}): not scored"))
                continue
            v, rst, det = got
            if rst == "ok":
                values.append(v)
            elif rst == NO_FACE:
                no_face += 1
            else:
                problems.append(Problem(ref.key, "error", f"{spec.name} ({variant}): {det}"))
        arr = np.asarray(values, np.float64)
        notes = ""
        if spec.name.startswith("psnr") and np.isinf(arr).any():
            n_inf = int(np.isinf(arr).sum())
            arr = np.where(np.isinf(arr), PSNR_IDENTICAL_DB, arr)
            notes = f"{n_inf} image(s) identical to GT (PSNR +inf) counted as {PSNR_IDENTICAL_DB:g} dB, pyiqa's bound"
        mean = float(arr.mean()) if len(arr) else None
        lo, hi = bootstrap_ci(arr, bootstrap, seed) if len(arr) else (None, None)
        if no_face:
            notes = (f"{notes}; " if notes else "") + (
                f"{no_face} sample(s) without a recorded face are outside this score")
        summary_status = "ok" if len(arr) == n_expected - no_face else ("partial" if len(arr) else "missing")
        out[spec.name] = MetricSummary(status=summary_status, mean=mean, ci_low=lo, ci_high=hi, n=len(arr),
                                       notes=notes, **base)
    return out, problems


def _aggregate_fid(cache: ScoreCache, split: str, method: str, variant: str, scored: list[SampleRef],
                   pred_hashes: dict[str, str], spec: MetricSpec, st: MetricStatus, base: dict[str, Any],
                   problems: list[Problem], known: set[str]) -> MetricSummary:
    from benchmarks.metrics import fid_from_features

    df = cache.table("features")
    feats: dict[tuple[str, ...], bytes] = {}
    if not df.empty:
        sub = df[(df["split"] == split) & (df["variant"] == variant) & (df["metric"] == spec.name)
                 & (df["version"] == st.version) & (df["status"] == "ok")]
        for k, f in zip(zip(*(sub[c].astype(str) for c in ("key", "method", "pred_hash", "ref_hash")), strict=True),
                        sub["feature"], strict=True):
            feats[k] = f
    a, b = [], []
    for ref in scored:
        fp = feats.get((ref.key, method, pred_hashes[ref.key], ref_hash(spec, variant, ref)))
        fg = feats.get((ref.key, GT_METHOD, ref.gt_hash, _gt_feature_hash(variant, ref)))
        if fp is None or fg is None:
            if ref.key not in known:
                problems.append(Problem(ref.key, "error", f"fid ({variant}): no Inception features"))
            continue
        a.append(np.frombuffer(fp, np.float32))
        b.append(np.frombuffer(fg, np.float32))
    n = len(a)
    if n < 2:
        return MetricSummary(status="missing" if n == 0 else "partial", n=n,
                             notes="FID needs at least 2 images", **base)
    value = fid_from_features(np.stack(a), np.stack(b))
    notes = "set-level: no per-image interval"
    if n < 2048:
        notes += f"; {n} images (< 2048 feature dims: covariance is rank-deficient, FID is biased upward)"
    return MetricSummary(status="ok" if n == base["n_expected"] else "partial", mean=value, n=n, notes=notes, **base)
