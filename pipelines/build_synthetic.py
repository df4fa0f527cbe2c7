"""`inscene build-synthetic`: identity-conditioned scenes of reference identities (§4.1, §6.1, Fig. 4-5).

Face2Scene's synthetic subset: full-body scenes of CelebRef-HQ identities generated with
InfiniteYou on FLUX.1-dev (stage-1 weights, anti-blur LoRA), kept when the ArcFace similarity of
the generated face to the reference is >= 0.55; 100 identities held out for validation (their LQ
then comes from ``inscene degrade``, one fixed version per image, §4.1).

Pipeline, per identity (``ROOT/<identity>/*.{jpg,png}``, the folder name is the File ID):

1. **references** (CPU): decode every reference, detect its largest face and embed it with the
   filter's embedder; unreadable references and references without a face are counted and
   skipped; an identity without a usable one is rejected with that reason.
2. **generate** (``GPU`` resource): until the identity has ``per_identity`` accepted scenes or
   ``max_attempts`` attempts: pick a reference (seeded), a prompt (seeded builder or
   ``--prompts``), a seed; generate (in batches); detect the face in the scene (no face: discarded
   with that reason); embed it; similarity to the reference used and the mean/max over all
   references; keep when the score reaches the threshold (ArcFace 0.55, §6.1, or the embedded
   embedder's own threshold). Every attempt is logged.

Durability: each identity has a journal (``work/<identity>/``): an accepted image is written
atomically before its attempt line is appended (flushed and fsynced) to ``attempts.jsonl``. A
rerun after a crash reads the journal: accepted images are kept, attempts continue from the next
number with the same seeds, so no image is regenerated, lost or duplicated. Identities are grouped
into partitions (Dask tasks, one model load per worker); a finished partition is committed as
shards (``dataset/{split}/synthetic-NNNNN.tar`` and the references once, in
``dataset/{split}/refs-NNNNN.tar``), an attempt log (``attempts/part-NNNNN.parquet``) and, last,
its decision log (the stage runner's "done" marker); reruns skip finished partitions.

The split is identity-disjoint: a seeded choice of ``val_identities`` identities is validation,
the rest train; ``split.json`` is written once and reused (a rerun with other identities or
options is refused rather than silently mixing runs, see ``run.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from inscene import imageio
from inscene.config import InsceneConfig
from inscene.errors import BadInputError, InsceneError
from inscene.schema import Face, Identity, Provenance, Sample
from inscene.stages import Item, Rejection, RunSummary, decision_path, partition_items, run_stages
from pipelines.prompts import Prompt, build_prompt, derive_seed, load_prompt_file

SUBSET = "synthetic"
REFS_SUBSET = "refs"
SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SPLIT_FORMAT = "inscene-synthetic-split/1"
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]+")
_CFG = InsceneConfig()
#: Detector matched to each embedder when ``detector`` is not given (same model family).
DEFAULT_DETECTOR = {"arcface": "insightface", "dlib": "dlib"}
#: Decision-log reasons that ``retry_failed`` reruns.
_RETRY_REASONS = ("out of memory",)


# ---- options and inputs --------------------------------------------------------------------------


@dataclass
class SyntheticOptions:
    """How to build the synthetic subset (recorded in ``run.json``).

    Attributes:
        per_identity: accepted scenes wanted per identity.
        max_attempts: generations tried per identity at most.
        val_identities: identities held out for validation (§6.1: 100).
        seed: seeds the split, the reference and prompt choices and every generation.
        generator: :func:`pipelines.generators.create_generator` name.
        generator_options: constructor options of the generator.
        embedder: identity embedder of the filter (``arcface``, §6.1; ``dlib`` offline).
        detector: face detector of the filter (default: matched to the embedder).
        threshold: keep threshold (default: the embedder's, 0.55 for ArcFace, §6.1).
        score: which similarity the threshold applies to: ``used`` (the reference the scene was
            generated from, as Figure 5 stores) or ``mean`` (over all references).
        batch_size: images per generator call.
        identities_per_partition: identities per Dask task and per shard.
        prompts_file: ``--prompts FILE.jsonl`` (default: the seeded prompt builder).
        max_pixels: decompression-bomb guard for references.
    """

    per_identity: int = _CFG.synthetic.per_identity
    max_attempts: int = _CFG.synthetic.max_attempts
    val_identities: int = _CFG.synthetic.val_identities
    seed: int = 0
    generator: str = "infiniteyou"
    generator_options: dict[str, Any] = field(default_factory=dict)
    embedder: str = "arcface"
    detector: str | None = None
    threshold: float | None = None
    score: str = "used"
    batch_size: int = 1
    identities_per_partition: int = _CFG.synthetic.identities_per_partition
    prompts_file: str | None = None
    max_pixels: int = _CFG.imageio.max_pixels

    def __post_init__(self) -> None:
        if self.per_identity < 1 or self.max_attempts < 1 or self.batch_size < 1:
            raise BadInputError("--per-identity, --max-attempts and --batch-size must be >= 1")
        if self.val_identities < 0:
            raise BadInputError(f"--val-identities must be >= 0, got {self.val_identities}")
        if self.identities_per_partition < 1:
            raise BadInputError("--identities-per-partition must be >= 1")
        if self.score not in ("used", "mean"):
            raise BadInputError(f"--score must be 'used' or 'mean', got {self.score!r}")

    @property
    def filter_detector(self) -> str:
        """The filter's detector name."""
        return self.detector or DEFAULT_DETECTOR.get(self.embedder, "dlib")

    def frozen(self) -> dict[str, Any]:
        """Options a resumed run must share with the run that started the folder."""
        return {
            "per_identity": self.per_identity, "val_identities": self.val_identities, "seed": self.seed,
            "generator": self.generator, "generator_options": _jsonable(self.generator_options),
            "embedder": self.embedder, "detector": self.filter_detector, "threshold": self.threshold,
            "score": self.score, "identities_per_partition": self.identities_per_partition,
            "prompts_file": os.path.abspath(self.prompts_file) if self.prompts_file else None,
        }


def generator_options(
    generator: str,
    *,
    stage: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    resolution: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    cpu_offload: bool = False,
    lora: list[str] | None = None,
    no_lora: bool = False,
    flux: str | os.PathLike | None = None,
    infiniteyou: str | os.PathLike | None = None,
    arcface_weights: str | os.PathLike | None = None,
    antelopev2: str | os.PathLike | None = None,
    id_detector: str | None = None,
) -> dict[str, Any]:
    """Constructor options of ``generator`` from the CLI's (only those given).

    Raises:
        BadInputError: a malformed ``--resolution``/``--lora``, or an option the generator does
            not take (e.g. ``--steps`` for ``compose``).
    """
    import dataclasses

    from pipelines.generators import create_generator
    from pipelines.generators.infiniteyou import parse_lora

    opts: dict[str, Any] = {}
    if resolution is not None:
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", resolution)
        if not m:
            raise BadInputError(f"--resolution must be WIDTHxHEIGHT, got {resolution!r}")
        opts["width"], opts["height"] = int(m.group(1)), int(m.group(2))
    if no_lora and lora:
        raise BadInputError("--lora and --no-lora exclude each other")
    if no_lora:
        opts["lora_specs"] = ()
    elif lora:
        opts["lora_specs"] = tuple(parse_lora(s) for s in lora)
    named = {"stage": stage, "steps": steps, "guidance": guidance, "dtype": dtype, "device": device,
             "flux_path": flux, "infiniteyou_path": infiniteyou, "arcface_path": arcface_weights,
             "antelopev2_path": antelopev2, "id_detector": id_detector}
    opts.update({k: (str(v) if isinstance(v, Path) else v) for k, v in named.items() if v is not None})
    if cpu_offload:
        opts["cpu_offload"] = True
    cls = type(create_generator(generator))
    accepted = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    flags = {"lora_specs": "--lora/--no-lora", "flux_path": "--flux", "infiniteyou_path": "--infiniteyou",
             "arcface_path": "--arcface-weights", "antelopev2_path": "--antelopev2", "width": "--resolution",
             "height": "--resolution"}
    for key in opts:
        if key not in accepted:
            flag = flags.get(key, "--" + key.replace("_", "-"))
            raise BadInputError(f"{flag} does not apply to generator '{generator}'")
    return opts


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


@dataclass(frozen=True)
class IdentitySource:
    """One identity folder: its key in the dataset, its File ID, its reference files."""

    identity_id: str
    file_id: str
    folder: str
    files: tuple[str, ...]


def discover_identities(root: str | os.PathLike) -> list[IdentitySource]:
    """Identity folders of ``ROOT/<identity>/*.{jpg,png,...}`` (CelebRef-HQ layout), sorted.

    The folder name is the File ID; the dataset key is that name with characters other than
    letters, digits, ``_`` and ``-`` replaced by ``-``. Folders without image files are kept (and
    rejected later with their reason).

    Raises:
        BadInputError: ``root`` is not a folder or holds no sub-folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise BadInputError(f"--identities {base} is not a folder (expected ROOT/<identity>/*.jpg)")
    out: list[IdentitySource] = []
    seen: dict[str, str] = {}
    for sub in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ident = _KEY_BAD.sub("-", sub.name).strip("-") or "identity"
        if ident in seen:
            raise BadInputError(f"identity folders '{seen[ident]}' and '{sub.name}' map to the same key '{ident}'")
        seen[ident] = sub.name
        files = tuple(
            str(p) for p in sorted(sub.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        out.append(IdentitySource(ident, sub.name, str(sub), files))
    if not out:
        raise BadInputError(f"no identity folders in {base} (expected ROOT/<identity>/*.jpg)")
    return out


def make_split(identities: list[str], val_identities: int, seed: int) -> dict[str, list[str]]:
    """Identity-disjoint split: a seeded choice of ``val_identities`` identities is validation."""
    ids = sorted(identities)
    if val_identities > len(ids):
        raise BadInputError(
            f"--val-identities {val_identities} but only {len(ids)} identities; pass --val-identities <= {len(ids)}"
        )
    val = sorted(random.Random(derive_seed("split", seed)).sample(ids, val_identities))
    chosen = set(val)
    return {"train": [i for i in ids if i not in chosen], "val": val}


def load_or_make_split(out: Path, identities: list[str], val_identities: int, seed: int) -> dict[str, str]:
    """Identity -> split from ``out/split.json``, written on the first run and reused after.

    Raises:
        BadInputError: the folder's split was made from other identities or options.
    """
    path = out / "split.json"
    if path.exists():
        rec = json.loads(path.read_text())
        known = set(rec["train"]) | set(rec["val"])
        if rec.get("seed") != seed or rec.get("val_identities") != val_identities:
            raise BadInputError(
                f"{path} was made with --seed {rec.get('seed')} --val-identities {rec.get('val_identities')}; "
                "rerun with those or use a new --out"
            )
        if known != set(identities):
            extra = sorted(set(identities) - known)
            gone = sorted(known - set(identities))
            what = f"new identity '{extra[0]}'" if extra else f"identity '{gone[0]}' is missing"
            raise BadInputError(f"{path} does not match --identities ({what}); use the same folder or a new --out")
        splits = rec
    else:
        splits = make_split(identities, val_identities, seed)
        rec = {"format": SPLIT_FORMAT, "seed": seed, "val_identities": val_identities, **splits}
        _atomic_write(path, json.dumps(rec, indent=1).encode())
    return {i: s for s in SPLITS for i in splits[s]}


# ---- the per-identity journal --------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class IdentityJournal:
    """Crash-safe record of one identity's attempts (``work/<identity>/``).

    ``attempts.jsonl`` holds one JSON line per finished attempt; an accepted attempt's image
    (``<key>.png``) is written atomically before its line, and a line is flushed and fsynced
    before the next attempt starts, so a crash loses at most the attempt in flight. A torn last
    line (a crash while appending) is ignored.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.dir = Path(folder)
        self.attempts_path = self.dir / "attempts.jsonl"
        self.refs_dir = self.dir / "refs"

    def records(self) -> list[dict[str, Any]]:
        """Attempt records, one per attempt number (the last line wins), in attempt order."""
        if not self.attempts_path.exists():
            return []
        by_attempt: dict[int, dict[str, Any]] = {}
        lines = self.attempts_path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # torn by a crash mid-append
                    continue
                raise InsceneError(f"{self.attempts_path}:{i + 1}: corrupt journal line") from None
            by_attempt[int(rec["attempt"])] = rec
        return [by_attempt[k] for k in sorted(by_attempt)]

    def accepted(self) -> list[dict[str, Any]]:
        """Accepted records whose image is on disk."""
        return [r for r in self.records() if r.get("accepted") and (self.dir / r["image"]).is_file()]

    def next_attempt(self) -> int:
        """Number of the next attempt (attempts continue where they stopped)."""
        recs = self.records()
        return int(recs[-1]["attempt"]) + 1 if recs else 0

    def write_image(self, name: str, data: bytes) -> None:
        """Write an accepted image atomically."""
        _atomic_write(self.dir / name, data)

    def append(self, record: dict[str, Any]) -> None:
        """Append one attempt record durably."""
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, ensure_ascii=False, allow_nan=False)
        with open(self.attempts_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_refs(self, refs: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        """Store the references (PNG + their record) for the identity shards."""
        for key, data in images.items():
            _atomic_write(self.refs_dir / f"{key}.png", data)
        _atomic_write(self.refs_dir / "refs.json", json.dumps(refs, indent=1, sort_keys=True).encode())

    def refs(self) -> list[dict[str, Any]]:
        """Reference records written by :meth:`write_refs` ([] when none)."""
        path = self.refs_dir / "refs.json"
        return json.loads(path.read_text()) if path.exists() else []


# ---- stages --------------------------------------------------------------------------------------


def preflight_filter(options: SyntheticOptions) -> None:
    """Check, without loading a model, that the filter's detector and embedder weights are here.

    Each backend is created by name through :mod:`inscene.faces` (which validates the name) and
    each weight it lists is located as the backend itself would: insightface packs with
    :func:`~inscene.faces.detectors.insightface_pack_dir`, everything else with
    :func:`inscene.weights.locate`.

    Raises:
        BadInputError: an unknown ``--detector`` or ``--embedder``.
        MissingWeightsError: a missing pack or file, naming it, where it was looked for and the
            fetch command.
    """
    from inscene import weights as W
    from inscene.faces import create_detector, create_embedder
    from inscene.faces.detectors import insightface_pack_dir

    for backend in (create_detector(options.filter_detector), create_embedder(options.embedder)):
        own = {getattr(backend, "pack", None), getattr(backend, "weights_name", None)} - {None}
        for name in backend.weights:
            path = getattr(backend, "path", None) if name in own else None
            if W.get_spec(name).layout == "insightface":
                insightface_pack_dir(name, path)
            else:
                W.locate(name, path)


def _filter_models(options: SyntheticOptions) -> tuple[Any, Any, float]:
    from inscene.faces import create_detector, create_embedder

    det = create_detector(options.filter_detector)
    emb = create_embedder(options.embedder)
    det.load()
    emb.load()
    threshold = emb.threshold if options.threshold is None else float(options.threshold)
    return det, emb, threshold


def _largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.area) if faces else None


@dataclass
class ReferencesStage:
    """Decode, detect and embed an identity's references; reject it when none is usable."""

    options: SyntheticOptions
    work: str
    name: str = "references"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Load the filter's detector and embedder (once per worker)."""
        self._det, self._emb, _ = _filter_models(self.options)

    def __call__(self, item: Item) -> Item | Rejection:
        ident = item.meta["identity_id"]
        files = list(item.meta["files"])
        if not files:
            return Rejection(self.name, "no reference images in the identity folder", {"refs_total": 0})
        journal = IdentityJournal(Path(self.work) / ident)
        refs: list[dict[str, Any]] = []
        usable: list[dict[str, Any]] = []
        pngs: dict[str, bytes] = {}
        unreadable = noface = 0
        for i, path in enumerate(files):
            key = f"{ident}-ref{i:02d}"
            rec: dict[str, Any] = {"key": key, "source": os.path.basename(path), "index": i,
                                   "file_id": item.meta["file_id"]}
            try:
                raw, _ = imageio.read_source(path)
                rec["sha256"] = imageio.sha256_bytes(raw)
                rgb = imageio.decode_image(raw, max_pixels=self.options.max_pixels)
            except imageio.ImageDecodeError as exc:
                unreadable += 1
                rec.update(usable=False, reason=f"unreadable: {exc.reason}")
                refs.append(rec)
                continue
            rec.update(width=int(rgb.shape[1]), height=int(rgb.shape[0]))
            face = _largest(self._det.detect(rgb))
            if face is None:
                noface += 1
                rec.update(usable=False, reason="no face detected")
            else:
                rec.update(usable=True, reason="", face=face.model_dump(mode="json"))
                usable.append({"key": key, "rgb": rgb, "face": face, "embedding": self._emb.embed(rgb, face)})
            pngs[key] = imageio.encode_image(rgb, "png")
            refs.append(rec)
        if not journal.refs() or [r.get("sha256") for r in journal.refs()] != [r.get("sha256") for r in refs]:
            journal.write_refs(refs, pngs)
        measured = {"refs_total": len(files), "refs_unreadable": unreadable, "refs_noface": noface,
                    "refs_usable": len(usable)}
        item.measured.update(measured)
        item.backends.update(detector=self._det.backend, embedder=self._emb.backend)
        if not usable:
            return Rejection(
                self.name,
                f"no usable face in any of {len(files)} references ({unreadable} unreadable, {noface} without a face)",
                measured,
            )
        item.data["refs"] = usable
        return item


def _is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


@dataclass
class GenerateStage:
    """Generate, filter and journal scenes of one identity until its quota or max attempts."""

    options: SyntheticOptions
    work: str
    name: str = "generate"
    resources: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from pipelines.generators import create_generator

        gen = create_generator(self.options.generator, **self.options.generator_options)
        if gen.uses_gpu and not self.resources:
            self.resources = {"GPU": 1}

    def setup(self) -> None:
        """Load the generator (once per worker) and the filter's models."""
        from pipelines.generators import create_generator

        self._gen = create_generator(self.options.generator, **self.options.generator_options)
        self._gen.load()
        self._det, self._emb, self._threshold = _filter_models(self.options)
        self._prompts = load_prompt_file(self.options.prompts_file) if self.options.prompts_file else None
        self._gen_config = json.dumps(_jsonable(self._gen.describe()), sort_keys=True)
        self._loras = json.dumps(self._gen.loras(), sort_keys=True)

    # -- planning (pure functions of the seed, identity and attempt) --

    def _prompt(self, ident: str, seed: int) -> Prompt:
        if self._prompts is not None:
            return self._prompts.choose(ident, seed)
        return build_prompt(seed)

    def __call__(self, item: Item) -> Item | Rejection:
        opts = self.options
        ident = item.meta["identity_id"]
        refs = item.data.pop("refs")
        journal = IdentityJournal(Path(self.work) / ident)
        conditions = {r["key"]: self._gen.condition(r["rgb"]) for r in refs}
        candidates = [r for r in refs if conditions[r["key"]] is not None]
        if not candidates:
            return Rejection(self.name, f"generator '{self._gen.name}' found no face in any usable reference",
                             {"refs_generator_usable": 0})
        all_refs = np.stack([r["embedding"] for r in refs])
        accepted = accepted_before = len(journal.accepted())
        attempt = journal.next_attempt()
        ran = gen_s = filt_s = 0.0
        failure: str | None = None
        while accepted < opts.per_identity and attempt < opts.max_attempts:
            n = min(opts.batch_size, opts.per_identity - accepted, opts.max_attempts - attempt)
            plan = []
            for a in range(attempt, attempt + n):
                seed = derive_seed("synthetic", opts.seed, ident, a)
                ref = candidates[random.Random(derive_seed("reference", seed)).randrange(len(candidates))]
                plan.append((a, seed, ref, self._prompt(ident, seed)))
            t0 = time.perf_counter()
            try:
                images = self._gen.generate([p[3].text for p in plan], [conditions[p[2]["key"]] for p in plan],
                                            [p[1] for p in plan])
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                failure = (f"out of memory at attempt {attempt} (batch {n}): try --cpu-offload, "
                           "--batch-size 1 or a smaller --resolution")
                break
            dt = (time.perf_counter() - t0) / n
            gen_s += dt * n
            for (a, seed, ref, prompt), image in zip(plan, images, strict=True):
                t1 = time.perf_counter()
                rec = self._judge(item, a, seed, ref, prompt, image, all_refs, refs, dt, journal)
                filt_s += time.perf_counter() - t1
                journal.append(rec)
                accepted += int(rec["accepted"])
                ran += 1
            attempt += n
        records = journal.records()
        item.measured.update(
            attempts=len(records),
            accepted=accepted,
            attempts_this_run=int(ran),
            accepted_this_run=int(accepted - accepted_before),
            no_face=sum(1 for r in records if r["reason"] == "no face detected"),
            below_threshold=sum(1 for r in records if r["reason"].startswith("identity")),
            quota_met=accepted >= opts.per_identity,
            generate_s=round(gen_s, 3),
            filter_s=round(filt_s, 3),
            refs_generator_usable=len(candidates),
        )
        item.backends["generator"] = self._gen.name
        if failure:
            return Rejection(self.name, failure)
        return item

    def _judge(
        self, item: Item, attempt: int, seed: int, ref: dict[str, Any], prompt: Prompt, image: np.ndarray,
        all_refs: np.ndarray, refs: list[dict[str, Any]], gen_s: float, journal: IdentityJournal,
    ) -> dict[str, Any]:
        """Filter one generated image; write it when accepted; return its attempt record."""
        ident = item.meta["identity_id"]
        key = f"{ident}-{attempt:05d}"
        t0 = time.perf_counter()
        faces = self._det.detect(image)
        primary = _largest(faces)
        rec: dict[str, Any] = {
            "identity_id": ident, "attempt": attempt, "seed": seed, "key": key, "reference_key": ref["key"],
            "prompt": prompt.text, "prompt_source": prompt.source, "tags": list(prompt.tags),
            "n_faces": len(faces), "similarity": None, "similarity_mean": None, "similarity_max": None,
            "embedder": self._emb.backend, "threshold": self._threshold, "generator": self._gen.name,
            "t_generate_s": round(gen_s, 4), "accepted": False, "reason": "",
        }
        if primary is None:
            rec["reason"] = "no face detected"
            rec["t_filter_s"] = round(time.perf_counter() - t0, 4)
            return rec
        emb = self._emb.embed(image, primary)
        used = self._emb.similarity(emb, ref["embedding"]).mean
        over_all = self._emb.similarity(emb, all_refs)
        rec.update(similarity=round(used, 6), similarity_mean=round(over_all.mean, 6),
                   similarity_max=round(over_all.max, 6), face_box=primary.box)
        score = used if self.options.score == "used" else over_all.mean
        if score < self._threshold:
            rec["reason"] = f"identity {score:.3f} < {self._threshold:g} ({self._emb.backend})"
            rec["t_filter_s"] = round(time.perf_counter() - t0, 4)
            return rec
        png = imageio.encode_image(image, "png")
        rec["t_filter_s"] = round(time.perf_counter() - t0, 4)
        sample = Sample(
            key=key,
            split=item.meta["split"],
            subset=SUBSET,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            identity_id=ident,
            faces=faces,
            prompt=prompt.text,
            provenance=Provenance(
                source=f"{self._gen.name}:{ident}/attempt-{attempt}",
                sha256=imageio.sha256_bytes(png),
                backends={"generator": self._gen.name, "detector": self._det.backend, "embedder": self._emb.backend},
                seed=seed,
            ),
        )
        meta = sample.to_meta()
        meta.update(
            file_id=item.meta["file_id"],
            reference_key=ref["key"],
            identity_similarity=float(rec["similarity"]),
            identity_similarity_mean=float(rec["similarity_mean"]),
            identity_similarity_max=float(rec["similarity_max"]),
            identity_embedder=self._emb.backend,
            identity_threshold=float(self._threshold),
            attempt=attempt,
            prompt_source=prompt.source,
            tags=json.dumps(list(prompt.tags)),
            face_landmarks68=json.dumps(primary.landmarks68) if primary.landmarks68 else "",
            generator=self._gen.name,
            generator_version=self._gen.version,
            generator_config=self._gen_config,
            loras=self._loras,
            t_generate_s=float(rec["t_generate_s"]),
            t_filter_s=float(rec["t_filter_s"]),
        )
        journal.write_image(f"{key}.png", png)
        rec.update(accepted=True, image=f"{key}.png", meta=meta)
        return rec


# ---- the sink: journals -> shards ----------------------------------------------------------------


@dataclass
class SyntheticSink:
    """Commit one partition: its identities' accepted scenes and references as shards, and its attempts."""

    root: str
    work: str
    out: str
    partitions: list[list[str]]
    splits: dict[str, str]

    def __call__(self, partition: int, items: list[Item]) -> None:
        from inscene.shards import ShardWriter

        per_split: dict[str, list[str]] = {}
        for ident in self.partitions[partition]:
            per_split.setdefault(self.splits[ident], []).append(ident)
        attempts: list[dict[str, Any]] = []
        for split, idents in sorted(per_split.items()):
            samples: list[tuple[str, Path, dict[str, Any]]] = []
            references: list[tuple[str, Path, dict[str, Any]]] = []
            for ident in idents:
                journal = IdentityJournal(Path(self.work) / ident)
                for rec in journal.records():
                    attempts.append({k: v for k, v in rec.items() if k != "meta"} | {"split": split})
                accepted = journal.accepted()
                for rec in accepted:
                    samples.append((rec["key"], journal.dir / rec["image"], rec["meta"]))
                if accepted:
                    references += _reference_rows(journal, ident, split)
            for subset, rows in ((SUBSET, samples), (REFS_SUBSET, references)):
                if not rows:
                    continue
                with ShardWriter(self.root, split, subset, start_shard=partition, max_count=len(rows) + 1,
                                 max_bytes=1 << 40, overwrite=True) as writer:
                    for key, path, meta in rows:
                        writer.write(key, {"png": path.read_bytes()}, meta)
        if attempts:
            from inscene.stages import write_parquet_atomic

            frame = pd.DataFrame(attempts)
            for col in ("tags", "face_box"):
                if col in frame:
                    frame[col] = frame[col].map(lambda v: None if v is None else json.dumps(v))
            write_parquet_atomic(frame, Path(self.out) / "attempts" / f"part-{partition:05d}.parquet")


    def committed_paths(self, partition: int) -> list[Path]:
        """The files this partition committed (scene and reference shards per split, its attempts log),
        which the stage runner checks on resume (a partition whose files are gone is redone from the
        identity journals, without generating again)."""
        found = []
        for split in sorted({self.splits[ident] for ident in self.partitions[partition]}):
            for subset in (SUBSET, REFS_SUBSET):
                stem = Path(self.root) / split / f"{subset}-{partition:05d}"
                found += [p for p in (stem.with_suffix(".tar"), stem.with_suffix(".parquet"),
                                      stem.with_suffix(".tar.json")) if p.is_file()]
        attempts = Path(self.out) / "attempts" / f"part-{partition:05d}.parquet"
        return found + ([attempts] if attempts.is_file() else [])


def _reference_rows(journal: IdentityJournal, ident: str, split: str) -> list[tuple[str, Path, dict[str, Any]]]:
    refs = journal.refs()
    file_id = str(refs[0].get("file_id", "")) if refs else ""
    rows = []
    keys = [r["key"] for r in refs if (journal.refs_dir / f"{r['key']}.png").exists()]
    for r in refs:
        path = journal.refs_dir / f"{r['key']}.png"
        if not path.exists():
            continue
        face = Face.model_validate(r["face"]) if r.get("face") else None
        record = Identity(identity_id=ident, source_id=file_id or None, references=keys, split=split)
        meta = {
            "key": r["key"], "identity_id": ident, "file_id": file_id, "split": split, "source": r["source"],
            "sha256": r.get("sha256", ""),
            "width": int(r.get("width", 0)), "height": int(r.get("height", 0)), "usable": bool(r.get("usable")),
            "reason": r.get("reason", ""), "face_box": json.dumps(face.box) if face else "",
            "face_landmarks": json.dumps(face.landmarks) if face else "",
            "identity": record.model_dump_json(),
        }
        rows.append((r["key"], path, meta))
    return rows


# ---- the run -------------------------------------------------------------------------------------


@dataclass
class SyntheticResult:
    """What a run produced."""

    out: Path
    summary: RunSummary
    identities: pd.DataFrame
    accepted: int
    attempts: int
    seconds: float
    diversity: dict[str, Any] = field(default_factory=dict)
    #: discarded generations (all runs) counted by reason, e.g. ``{"no face detected": 3}``.
    rejections: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No stage crashed (rejections and short quotas are reported, not failures)."""
        return self.summary.errors == 0


def _check_run(out: Path, options: SyntheticOptions, generator_config: dict[str, Any]) -> None:
    path = out / "run.json"
    frozen = options.frozen() | {"generator_config": _jsonable(generator_config)}
    if path.exists():
        old = json.loads(path.read_text()).get("frozen", {})
        for key in sorted(set(old) | set(frozen)):
            if old.get(key) != frozen.get(key):
                raise BadInputError(
                    f"{out} was started with {key}={json.dumps(old.get(key))}, now {json.dumps(frozen.get(key))}: "
                    "resume with the same options, or use a new --out"
                )
    record = {
        "frozen": frozen,
        "options": _jsonable(asdict(options)),
        "config": InsceneConfig().flat(),
    }
    _atomic_write(path, json.dumps(record, indent=1, sort_keys=True).encode())


def _retry_failed(out: Path, n_partitions: int) -> int:
    """Drop the done marker of partitions with crashed or out-of-memory identities (journals kept)."""
    dropped = 0
    for p in range(n_partitions):
        path = decision_path(out, p)
        if not path.exists():
            continue
        rows = pd.read_parquet(path)
        bad = rows.get("error", pd.Series(False, index=rows.index)).fillna(False).astype(bool)
        bad |= rows["reason"].astype(str).str.startswith(_RETRY_REASONS)
        if bad.any():
            path.unlink()
            dropped += 1
    return dropped


_BELOW_THRESHOLD = re.compile(r"identity -?[0-9.]+ < (.+)$")


def _attempt_rejections(out: Path, n_partitions: int) -> dict[str, int]:
    """Discarded generations counted by reason, from every committed attempt log (all runs).

    Below-threshold reasons (``identity 0.412 < 0.55 (arcface-antelopev2)``) are counted together
    as ``identity similarity < 0.55 (arcface-antelopev2)``.
    """
    counts: dict[str, int] = {}
    for p in range(n_partitions):
        path = Path(out) / "attempts" / f"part-{p:05d}.parquet"
        if not path.exists():
            continue
        rows = pd.read_parquet(path, columns=["accepted", "reason"])
        for reason in rows.loc[~rows["accepted"].astype(bool), "reason"].astype(str):
            m = _BELOW_THRESHOLD.match(reason)
            label = f"identity similarity < {m.group(1)}" if m else reason
            counts[label] = counts.get(label, 0) + 1
    return counts


def _log_stamps(out: Path, n_partitions: int) -> dict[int, int]:
    """Each existing decision log's ``st_mtime_ns``, by partition."""
    stamps = {}
    for p in range(n_partitions):
        with contextlib.suppress(OSError):
            stamps[p] = decision_path(out, p).stat().st_mtime_ns
    return stamps


def _counts(out: Path, n_partitions: int, before: dict[int, int] | None = None) -> tuple[int, int, int]:
    """Accepted images (all runs); accepted and attempted as recorded by the logs written since
    ``before`` (:func:`_log_stamps` at the start of this run: new or rewritten logs; None: every log)."""
    total = accepted = attempts = 0
    for p in range(n_partitions):
        path = decision_path(out, p)
        if path.exists():
            rows = pd.read_parquet(path)
            if "m.accepted" in rows:
                total += int(rows["m.accepted"].fillna(0).sum())
                if before is None or before.get(p) != path.stat().st_mtime_ns:
                    accepted += int(rows["m.accepted_this_run"].fillna(0).sum())
                    attempts += int(rows["m.attempts_this_run"].fillna(0).sum())
    return total, accepted, attempts


def run_build_synthetic(
    identities_root: str | os.PathLike,
    out: str | os.PathLike,
    options: SyntheticOptions | None = None,
    *,
    cluster: Any = None,
    console: Console | None = None,
    retry_failed: bool = False,
    clean_work: bool = False,
    tagger: str = "prompt",
) -> SyntheticResult:
    """Build (or resume) the synthetic subset into ``out``.

    Args:
        identities_root: ``ROOT/<identity>/*.jpg`` reference faces.
        out: output folder (``dataset/``, ``work/``, ``attempts/``, ``decisions/``, ``diversity/``,
            ``split.json``, ``run.json``, ``identities.parquet``).
        options: see :class:`SyntheticOptions`.
        cluster: a ``ClusterOptions`` to run on Dask workers; None runs in this process.
        console: where the summary goes.
        retry_failed: rerun partitions whose identities ran out of memory or crashed.
        clean_work: delete the journals of partitions that finished without failures.
        tagger: scene tagger of the diversity report (:func:`pipelines.scene_diversity.scene_tags`).

    Returns:
        A :class:`SyntheticResult`.

    Raises:
        MissingWeightsError: the generator's or the filter's weights are missing (checked before
            anything is written to ``out``).
        BadInputError: bad options or inputs, or ``out`` was started with other options.
    """
    from pipelines.generators import create_generator

    console = console or Console()
    options = options or SyntheticOptions()
    t0 = time.perf_counter()
    out = Path(out)
    sources = discover_identities(identities_root)
    generator = create_generator(options.generator, **options.generator_options)  # validates options
    # Missing weights (generator's or filter's) or a bad prompt file: one line now, before anything
    # is written to ``out`` (a failed start must not freeze options in run.json) or workers start.
    generator.preflight()
    preflight_filter(options)
    if options.prompts_file:
        load_prompt_file(options.prompts_file)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_or_make_split(out, [s.identity_id for s in sources], options.val_identities, options.seed)
    _check_run(out, options, generator.describe())
    items = [
        Item(key=s.identity_id, source=s.folder,
             meta={"identity_id": s.identity_id, "file_id": s.file_id, "split": splits[s.identity_id],
                   "files": s.files})
        for s in sources
    ]
    parts = [[it.key for it in part] for part in partition_items(items, options.identities_per_partition)]
    if retry_failed:
        n = _retry_failed(out, len(parts))
        console.print(f"retrying {n} partition(s) with failed identities", highlight=False)
    work = out / "work"
    dataset = out / "dataset"
    stages = [ReferencesStage(options, str(work)), GenerateStage(options, str(work))]
    sink = SyntheticSink(str(dataset), str(work), str(out), parts, splits)
    from inscene.runtime import console as rt_console

    run_start = time.perf_counter()
    stamps = _log_stamps(out, len(parts))

    def on_progress(done: int, total: int) -> None:
        # "this run": the logs this run wrote (a redone partition's old log no longer counts)
        images, new_acc, new_att = _counts(out, len(parts), before=stamps)
        hours = max(time.perf_counter() - run_start, 1e-9) / 3600
        rate = f"{100 * new_acc / new_att:.0f}%" if new_att else "-"
        rt_console.print(
            f"synthetic: {done}/{total} partitions, {images} images accepted; this run {new_acc} of "
            f"{new_att} attempts ({rate}), {new_acc / hours:.1f} images/hour",
            highlight=False, markup=False,
        )

    client = None
    console.print(
        f"[bold]inscene build-synthetic[/] {len(sources)} identities ({sum(v == 'val' for v in splits.values())} val) "
        f"-> {out}; generator {options.generator}, filter {options.embedder}",
        highlight=False,
    )
    try:
        if cluster is not None:
            from inscene.runtime import make_client

            client = make_client(cluster)
        summary = run_stages(stages, items, out, sink, partition_size=options.identities_per_partition,
                             client=client, on_progress=on_progress, description="identity partitions")
    finally:
        if client is not None:
            from inscene.runtime import close_client

            close_client(client)
    from inscene.shards import write_index

    if dataset.exists():
        write_index(dataset)
    identities = _identity_table(summary.decisions, splits)
    identities.to_parquet(out / "identities.parquet", index=False)
    if clean_work:
        _clean_work(out, work, parts)
    from pipelines.scene_diversity import diversity_report

    diversity = diversity_report(dataset, out / "diversity", tagger=tagger) if dataset.exists() else {}
    accepted = int(identities["accepted"].sum()) if len(identities) else 0
    attempts = int(identities["attempts"].sum()) if len(identities) else 0
    result = SyntheticResult(out, summary, identities, accepted, attempts, time.perf_counter() - t0, diversity,
                             _attempt_rejections(out, len(parts)))
    console.print(_summary_table(result, options))
    if not result.accepted:
        console.print(_nothing_accepted(result, options), highlight=False, markup=False, soft_wrap=True)
    return result


def _identity_table(decisions: pd.DataFrame, splits: dict[str, str]) -> pd.DataFrame:
    cols = {"m.refs_usable": "refs_usable", "m.attempts": "attempts", "m.accepted": "accepted",
            "m.quota_met": "quota_met"}
    rows = []
    for _, r in decisions.iterrows():
        row = {"identity_id": r["key"], "split": splits.get(r["key"], ""),
               "status": "ok" if r["accepted"] else f"{r['stage']}: {r['reason']}"}
        for src, dst in cols.items():
            v = r.get(src)
            row[dst] = 0 if v is None or (isinstance(v, float) and np.isnan(v)) else v
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["identity_id", "split", "status", *cols.values()])
    for c in ("refs_usable", "attempts", "accepted"):
        frame[c] = frame[c].astype(int)
    frame["quota_met"] = frame["quota_met"].astype(bool)
    return frame


def _clean_work(out: Path, work: Path, parts: list[list[str]]) -> None:
    for p, idents in enumerate(parts):
        path = decision_path(out, p)
        if not path.exists():
            continue
        rows = pd.read_parquet(path)
        if rows.get("error", pd.Series(False, index=rows.index)).fillna(False).astype(bool).any():
            continue
        if rows["reason"].astype(str).str.startswith(_RETRY_REASONS).any():
            continue
        for ident in idents:
            shutil.rmtree(work / ident, ignore_errors=True)


def _summary_table(result: SyntheticResult, options: SyntheticOptions):
    from rich.table import Table

    ids = result.identities
    t = Table(title="inscene build-synthetic", show_header=True, header_style="bold")
    t.add_column("what")
    t.add_column("value", overflow="fold")
    for split in SPLITS:
        sub = ids[ids["split"] == split]
        t.add_row(f"{split} identities", f"{int((sub['accepted'] > 0).sum())} with images / {len(sub)}")
        t.add_row(f"{split} images", str(int(sub["accepted"].sum())))
    rate = f"{100 * result.accepted / result.attempts:.1f}%" if result.attempts else "-"
    t.add_row("attempts (acceptance)", f"{result.attempts} ({rate})")
    short = ids[(ids["status"] == "ok") & ~ids["quota_met"]]
    t.add_row("identities short of quota",
              f"{len(short)} (quota {options.per_identity}, max {options.max_attempts} attempts)")
    for label, count in sorted(result.summary.by_reason.items()):
        t.add_row("  identity rejected by", f"{label} x{count}")
    t.add_row("errors", str(result.summary.errors))
    t.add_row("partitions (resumed)", f"{result.summary.partitions} ({result.summary.skipped_partitions})")
    if result.diversity:
        t.add_row("scene tags", f"{result.diversity['distinct_tags']} distinct -> {result.diversity['wordcloud']}")
    if result.accepted:  # else there is no dataset/ to point at (see _nothing_accepted)
        t.add_row("dataset", str(result.out / "dataset"))
        if (ids["split"] == "val").any():
            t.add_row("next: val LQ", f"inscene degrade {result.out / 'dataset'} --split val --subset {SUBSET} "
                      f"--versions 1 --out {result.out / 'val-lq'}")
    t.add_row("seconds", f"{result.seconds:.1f}")
    return t


def _nothing_accepted(result: SyntheticResult, options: SyntheticOptions) -> str:
    """The one line printed instead of the dataset and next steps when no image was accepted."""
    reasons = sorted(result.rejections.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{label} x{count}" for label, count in reasons]
    parts += [f"identity rejected by {label} x{count}" for label, count in sorted(result.summary.by_reason.items())]
    line = (f"nothing passed the identity filter: 0 of {result.attempts} generated images accepted"
            f" ({', '.join(parts) or 'nothing generated'}); no dataset to degrade or publish")
    if options.generator == "infiniteyou-tiny":
        line += "; infiniteyou-tiny's random weights draw noise, not faces (a smoke test of the code path)"
    return line
