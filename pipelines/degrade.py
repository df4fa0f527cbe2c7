"""`inscene degrade`: K replayable Real-ESRGAN degradations of every clean image (§4.1).

Input is a dataset folder of shards (written by inscene) or a folder of images. Every output sample
carries the HQ (``hq.<ext>``), K LQ versions (``lq0.png`` .. ``lq{K-1}.png``, lossless) and the
parameters of each (``lq0.json`` ..), plus the usual metadata (:class:`inscene.schema.Sample`, with
``degradation`` set when K = 1, and columns ``lq_versions``, ``lq_output``, ``lq_params``). A shard
input's metadata is carried over whole: every field of the input record (a builder's own columns
such as ``file_id``, ``identity_similarity``, ``tags`` included) is in the output record, with the
degradation fields updated or added. (As for any shard writer, the samples of one input subset
must share their metadata keys.)

Versions: K = ``--versions``; without it, the paper's counts (§4.1, :class:`inscene.config.
DegradationSettings`): five independently degraded versions per image of a ``train`` split, one
fixed LQ per image of any other split (validation). A preset is one fixed operator: K = 1.

Determinism: version k of sample ``key`` is drawn from seed ``sha256(f"{seed}/{key}/{k}")``, so
the output depends on the seed, the keys and the options only, not on the order, the partitioning
or the number of workers: the same seed gives byte-identical shards, in this process or on Dask
workers alike (the torch operators run on one thread, so float sums add in one order). Partitions
are written as one shard each with a decision log, so an interrupted run resumes where it stopped.
``degrade.json`` records the options, the resolved input folder and a digest of the input listing
(keys, sizes, mtimes): a rerun with other options or over changed inputs is refused (use a new
``--out``). A damaged input shard (truncated, corrupt) is skipped with a warning naming it, and the
run exits 1.

LQ size: InScene stores each LQ resized back to its HQ's size (bicubic), as S3Diff's training
code does; the paper restores at native resolution and finds faces in the LQ in scene coordinates
(§3.1), so face boxes of the HQ hold for the LQ. ``--lq-size lq`` keeps the GT/scale image.

``--preview IMG --out grid.png`` renders one image under d1–d4 and a few random draws, each with its
parameter summary and PSNR to the input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from inscene import imageio
from inscene.config import DegradationSettings
from inscene.errors import BadInputError
from inscene.outdir import listing_digest, prepare_out_dir
from inscene.schema import DegradationParams, Provenance, Sample
from inscene.stages import Item, Rejection, RunSummary, run_stages

DEFAULT_PARTITION_SIZE = 100
RECORD_NAME = "degrade.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
_HQ_FIELDS = ("hq", "gt", "")  # preferred HQ member names: hq.<ext>, gt.<ext>, <ext>
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]+")
_SEED_LIMIT = 2**53


def version_seed(seed: int, key: str, version: int) -> int:
    """The sampling seed of version ``version`` of sample ``key`` (order-independent)."""
    digest = hashlib.sha256(f"{seed}/{key}/{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_LIMIT


@dataclass(frozen=True)
class DegradeOptions:
    """What to degrade with. Recorded in the output's ``degrade.json``.

    ``versions`` None means "by split" (:meth:`versions_for`); a :class:`DegradeStage` always gets
    options with the count resolved (:meth:`for_split`).
    """

    versions: int | None = None
    seed: int = 0
    profile: str = "realesrgan"
    preset: str | None = None
    spatial_blur: bool = False
    lq_size: str = "gt"
    device: str = "cpu"

    def check(self) -> None:
        """Raise :class:`BadInputError` on an inconsistent set of options."""
        from inscene.degradations import PRESETS, PROFILES

        if self.versions is not None and self.versions < 1:
            raise BadInputError(f"--versions must be >= 1, got {self.versions}")
        if not 0 <= self.seed < _SEED_LIMIT:
            raise BadInputError(f"--seed must be in [0, 2**53), got {self.seed}")
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise BadInputError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
            if self.versions not in (None, 1):
                raise BadInputError("a preset is one fixed operator: use --versions 1 with --preset")
        elif self.profile not in PROFILES:
            raise BadInputError(f"unknown profile {self.profile!r}; known: {', '.join(PROFILES)}")
        if self.lq_size not in ("gt", "lq"):
            raise BadInputError(f"--lq-size must be 'gt' or 'lq', got {self.lq_size!r}")

    def versions_for(self, split: str) -> int:
        """LQ versions per image of ``split``: ``versions`` when given, 1 with a preset, else the
        paper's count for the split (train: 5, other splits: 1; §4.1, ``DegradationSettings``)."""
        if self.versions is not None:
            return self.versions
        if self.preset is not None:
            return 1
        return DegradationSettings().versions_for(split)

    def for_split(self, split: str) -> DegradeOptions:
        """These options with ``versions`` resolved for ``split``."""
        return dataclasses.replace(self, versions=self.versions_for(split))

    def params(self, key: str, version: int) -> DegradationParams:
        """The operator of one version of one sample."""
        from inscene.degradations import preset, sample_params

        if self.preset is not None:
            return preset(self.preset, spatial_blur=self.spatial_blur, output=self.lq_size)
        return sample_params(
            version_seed(self.seed, key, version), self.profile,
            spatial_blur=self.spatial_blur, output=self.lq_size,
        )

    @property
    def label(self) -> str:
        """Short name of the operator family (recorded as the backend)."""
        base = self.preset or self.profile
        return base + ("+spatial" if self.spatial_blur else "")


# ---- reading inputs ----------------------------------------------------------------------------


_TAR_CACHE: dict[str, dict[str, tarfile.TarInfo]] = {}


def _tar_members(path: str) -> dict[str, tarfile.TarInfo]:
    members = _TAR_CACHE.get(path)
    if members is None:
        with tarfile.open(path, "r:") as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
        _TAR_CACHE[path] = members
    return members


def _read_member(path: str, name: str) -> bytes:
    info = _tar_members(path)[name]
    with open(path, "rb") as fh:
        fh.seek(info.offset_data)
        data = fh.read(info.size)
    if len(data) != info.size:
        raise BadInputError(f"shard {path}: member {name} is truncated")
    return data


def _pick_hq(fields: list[str]) -> str | None:
    images = [f for f in fields if f.rsplit(".", 1)[-1].lower() in ("png", "jpg", "jpeg", "webp")]
    for stem in _HQ_FIELDS:
        for f in images:
            if (f.rsplit(".", 1)[0] if "." in f else "") == stem:
                return f
    return images[0] if len(images) == 1 else None


def is_dataset(folder: Path) -> bool:
    """True when ``folder`` holds inscene shards."""
    from inscene.shards import shard_paths

    return (folder / "index.json").exists() or bool(shard_paths(folder))


def _check_tar(path: str) -> None:
    """Raise :class:`tarfile.ReadError` when a shard is cut short or holds a corrupt header.

    ``tarfile`` stops listing silently at a bad header that is not the first one; data past the
    last member other than the zero padding of the end of the archive means such a header.
    """
    members = _tar_members(path)
    end = max((m.offset_data + m.size for m in members.values()), default=0)
    size = os.path.getsize(path)
    if end > size:
        raise tarfile.ReadError("unexpected end of data")
    with open(path, "rb") as fh:
        fh.seek(end)
        tail = fh.read()
    pad = -end % 512  # the last member's data is padded to a 512-byte block
    if tail[pad:].strip(b"\0"):
        raise tarfile.ReadError(f"corrupt tar header after byte {end + pad}")


def list_shard_items(
    root: Path, split: str | None, subset: str | None, damaged: list[str] | None = None
) -> dict[tuple[str, str], list[Item]]:
    """Items per (split, subset) of a shard dataset, by key order within each shard, shards sorted.

    A shard that cannot be listed (truncated, corrupt header, unreadable) is skipped; when
    ``damaged`` is given, ``"<shard>: <why>"`` is appended to it for each such shard.
    """
    from inscene.shards import shard_paths

    groups: dict[tuple[str, str], list[Item]] = {}
    for tar in shard_paths(root, split):
        sub = tar.name.rsplit("-", 1)[0]
        if subset is not None and sub != subset:
            continue
        try:
            _check_tar(str(tar))
        except (tarfile.TarError, OSError) as exc:
            _TAR_CACHE.pop(str(tar), None)
            if damaged is not None:
                damaged.append(f"{tar}: {exc}")
            continue
        by_key: dict[str, list[str]] = {}
        for name in _tar_members(str(tar)):
            key, _, fld = name.partition(".")
            by_key.setdefault(key, []).append(fld)
        for key in sorted(by_key):
            fields = by_key[key]
            hq = _pick_hq([f for f in fields if f != "json"])
            item = Item(key=key, source=f"{tar}#{key}")
            item.data.update(tar=str(tar), hq_field=hq, has_meta="json" in fields)
            groups.setdefault((tar.parent.name, sub), []).append(item)
    return groups


def list_folder_items(folder: Path) -> list[Item]:
    """One item per image file under ``folder`` (recursive, sorted), keys from relative paths."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    items, seen = [], {}
    for path in files:
        rel = path.relative_to(folder).with_suffix("")
        key = _KEY_BAD.sub("_", str(rel).replace(os.sep, "__")).strip("_") or "image"
        if key in seen:
            raise BadInputError(f"{path} and {seen[key]} map to the same sample key {key!r}")
        seen[key] = path
        items.append(Item(key=key, source=str(path)))
    return items


# ---- the stage ----------------------------------------------------------------------------------


@dataclass
class DegradeStage:
    """Decode the HQ, apply K operators, encode the LQs and build the sample's members and meta."""

    options: DegradeOptions
    split: str
    subset: str
    max_pixels: int = imageio.DEFAULT_MAX_PIXELS
    name: str = "degrade"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing heavy: the degradations are plain torch."""
        import torch

        if self.options.device.startswith("cuda") and not torch.cuda.is_available():
            raise BadInputError("--device cuda but no CUDA device is visible on this worker")

    def _load(self, item: Item) -> tuple[bytes, str, dict[str, Any]]:
        if "tar" in item.data:
            hq_field = item.data["hq_field"]
            if hq_field is None:
                raise BadInputError("no single image member to degrade (expected hq.*, gt.* or one image)")
            data = _read_member(item.data["tar"], f"{item.key}.{hq_field}")
            meta = {}
            if item.data.get("has_meta"):
                meta = json.loads(_read_member(item.data["tar"], f"{item.key}.json"))
            ext = hq_field.rsplit(".", 1)[-1].lower()
            return data, ext, meta
        data, _ = imageio.read_source(item.source)
        return data, "", {}

    def __call__(self, item: Item) -> Item | Rejection:
        from inscene.degradations import apply

        data, ext, in_meta = self._load(item)
        try:
            rgb = imageio.decode_image(data, max_pixels=self.max_pixels)
        except imageio.ImageDecodeError as exc:
            return Rejection(self.name, exc.reason)
        h, w = rgb.shape[:2]
        item.measured["height"], item.measured["width"] = int(h), int(w)
        opts = self.options
        params = [opts.params(item.key, k) for k in range(opts.versions_for(self.split))]
        with _one_torch_thread():  # same bytes in this process and on Dask workers (see the function)
            lqs = apply([rgb] * opts.versions, params, device=opts.device)
        members: dict[str, bytes] = {}
        if ext in ("png", "jpg", "jpeg", "webp"):
            members[f"hq.{ext}"] = data  # shard input: the HQ bytes as they were
        else:
            members["hq.png"] = imageio.encode_image(rgb, "png")  # upright, metadata-free
        for k, (lq, p) in enumerate(zip(lqs, params, strict=True)):
            members[f"lq{k}.png"] = imageio.encode_image(lq, "png")
            members[f"lq{k}.json"] = p.model_dump_json().encode()
            item.measured[f"psnr_lq{k}"] = round(_psnr(rgb, lq), 4) if lq.shape == rgb.shape else None
        item.data = {"members": members}
        item.backends["degradation"] = f"inscene-{opts.label}"
        item.meta = self._meta(item, rgb, data, in_meta, params)
        return item

    def _meta(
        self, item: Item, rgb: np.ndarray, data: bytes, in_meta: dict[str, Any], params: list[DegradationParams]
    ) -> dict[str, Any]:
        h, w = rgb.shape[:2]
        deg = params[0] if len(params) == 1 else None
        sample = None
        if in_meta.get("schema_version") is not None and in_meta.get("key"):
            try:
                sample = Sample.from_meta(in_meta)
            except Exception:  # noqa: BLE001 - foreign metadata: start a fresh record
                sample = None
        if sample is not None:
            backends = dict(sample.provenance.backends, **item.backends)
            sample = sample.model_copy(update={
                "degradation": deg,
                "provenance": sample.provenance.model_copy(update={"backends": backends}),
            })
        else:
            sample = Sample(
                key=item.key, split=self.split, subset=self.subset, width=int(w), height=int(h),
                degradation=deg,
                provenance=Provenance(
                    source=os.path.basename(item.source.split("#")[0]),
                    sha256=imageio.sha256_bytes(data),
                    backends=dict(item.backends),
                    seed=self.options.seed,
                ),
            )
        # Every field of the input record is kept; the record's own fields and ours are updated.
        meta = {**in_meta, **sample.to_meta()}
        meta.update(
            lq_versions=len(params),
            lq_output=self.options.lq_size,
            lq_params=json.dumps([p.model_dump(mode="json") for p in params], sort_keys=True),
        )
        return meta


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch with one intra-op thread, then restore the previous count.

    A float sum split over N threads adds in another order than over 1, which changes a few pixels
    by one level after rounding: without a fixed count, ``--in-process`` (all cores) and Dask
    workers (one thread each) would write different bytes for the same seed. Dask workers already
    fill the cores with one thread each, so only an in-process run pays for it.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@dataclass
class DegradedShardSink:
    """Writes one partition's samples to one shard (shard index = partition index)."""

    root: str
    split: str
    subset: str

    def __call__(self, partition: int, items: list[Item]) -> None:
        from inscene.shards import ShardWriter

        with ShardWriter(
            self.root, self.split, self.subset, start_shard=partition, max_count=max(len(items), 1),
            max_bytes=2**62, overwrite=True,
        ) as writer:
            for item in items:
                writer.write(item.key, item.data["members"], item.meta)


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class DegradeResult:
    """What a run produced."""

    out: Path
    summaries: dict[tuple[str, str], RunSummary]
    seconds: float
    damaged_inputs: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Samples written."""
        return sum(s.accepted for s in self.summaries.values())

    @property
    def ok(self) -> bool:
        """True when no item failed with an error and no input shard was skipped as damaged."""
        return not self.damaged_inputs and all(s.errors == 0 for s in self.summaries.values())


def run_degrade(
    inp: Path,
    out: Path,
    options: DegradeOptions,
    *,
    split: str | None = None,
    subset: str | None = None,
    partition_size: int = DEFAULT_PARTITION_SIZE,
    cluster: Any = None,
    console: Console | None = None,
) -> DegradeResult:
    """Degrade every image of ``inp`` (shard dataset or image folder) into shards under ``out``.

    Args:
        inp: a dataset folder written by inscene, or a folder of images.
        out: output dataset folder (created; reruns resume).
        options: versions, seed, profile or preset, LQ size, device.
        split: shard input: only this split; image folder: the split to write (default "val").
        subset: shard input: only this subset; image folder: the subset to write ("degraded").
        partition_size: samples per partition (= per output shard).
        cluster: ``ClusterOptions`` to run on Dask workers; None runs in this process.
        console: where to print progress.
    """
    console = console or Console()
    options.check()
    inp, out = Path(inp), Path(out)
    if not inp.is_dir():
        raise BadInputError(f"not a folder: {inp}")
    if out.resolve() == inp.resolve():
        raise BadInputError("--out must differ from the input folder")
    t0 = time.perf_counter()
    damaged: list[str] = []
    if is_dataset(inp):
        groups = list_shard_items(inp, split, subset, damaged)
        for what in damaged:
            console.print(f"[yellow]warning:[/] skipping damaged input shard {what}", highlight=False)
    else:
        groups = {(split or "val", subset or "degraded"): list_folder_items(inp)}
    if not any(groups.values()):
        raise BadInputError(f"no images found in {inp}" + (f" ({len(damaged)} damaged shard(s) skipped)"
                                                             if damaged else ""))
    prepare_out_dir(out)
    record = {"input": str(inp.resolve()), **options.__dict__, "partition_size": partition_size}
    if options.versions is None and options.preset is None:
        ds = DegradationSettings()
        record["versions_by_split"] = {"train": ds.train_versions_per_image, "other": ds.val_versions_per_image}
    record["inputs_digest"] = _inputs_digest(inp, groups)
    _check_record(out, record)

    client = None
    summaries: dict[tuple[str, str], RunSummary] = {}
    try:
        if cluster is not None:
            from inscene.runtime import make_client

            client = make_client(cluster)
        for (sp, sub), items in sorted(groups.items()):
            opts = options.for_split(sp)
            why = ""
            if options.versions is None and options.preset is None:
                rule = record["versions_by_split"]
                why = (f"; §4.1 default for split '{sp}' (train: {rule['train']}, other splits: {rule['other']}), "
                       "--versions to change")
            console.print(f"[bold]inscene degrade[/] {sp}/{sub}: {len(items)} images x {opts.versions} "
                          f"version(s) ({options.label}{why}) -> {out}", highlight=False)
            stage = DegradeStage(opts, sp, sub)
            summaries[(sp, sub)] = run_stages(
                [stage], items, out / "decisions" / f"{sp}-{sub}",
                DegradedShardSink(str(out), sp, sub), partition_size=partition_size, client=client,
            )
    finally:
        if client is not None:
            from inscene.runtime import close_client

            close_client(client)
    from inscene.shards import write_index

    write_index(out)
    result = DegradeResult(out, summaries, time.perf_counter() - t0, damaged)
    for (sp, sub), s in summaries.items():
        console.print(f"{sp}/{sub}: {s.accepted} written, {s.rejected} rejected, {s.errors} errors "
                      f"({s.skipped_partitions}/{s.partitions} partitions resumed)")
    if damaged:
        console.print(f"{len(damaged)} damaged input shard(s) skipped: "
                      + "; ".join(damaged), highlight=False)
    return result



def _inputs_digest(inp: Path, groups: dict[tuple[str, str], list[Item]]) -> str:
    """A digest of what the run reads: every item's key with its file's size and mtime (shard input:
    the tar holding it), so a rerun over added, removed or changed inputs is refused."""
    entries = []
    for (sp, sub), items in sorted(groups.items()):
        for item in items:
            file = item.data.get("tar", item.source)
            rel = os.path.relpath(file, inp)
            entries.append((f"{sp}/{sub}/{item.key}@{rel}", file))
    return listing_digest(entries)


def _check_record(out: Path, record: dict[str, Any]) -> None:
    """Refuse ``out`` when it holds a run with other options or other inputs; write ``record``.

    Records written before inputs were fingerprinted (no ``inputs_digest``) or with the input
    path as typed (relative) still resume: the digest is then unknown (accepted) and the path is
    resolved from the current folder.
    """
    path = out / RECORD_NAME
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict):
            raise BadInputError(f"{out} holds an unreadable {RECORD_NAME}; use a new --out")
        old = dict(old)
        if "input" in old:
            old["input"] = str(Path(old["input"]).resolve())
        old_digest = old.pop("inputs_digest", None)
        new = {k: v for k, v in record.items() if k != "inputs_digest"}
        if old != new:
            raise BadInputError(
                f"{out} holds a run with other options ({path}); use a new --out to change them"
            )
        if old_digest is not None and old_digest != record["inputs_digest"]:
            raise BadInputError(
                f"{out} holds a degrade run over other input files (images or shards added, removed "
                f"or changed since); use a new --out"
            )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ---- preview ------------------------------------------------------------------------------------


PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def preview_path(image: Path, out: Path | None = None) -> Path:
    """Where ``--preview IMG`` writes its grid: ``out``, or ``<IMG stem>-preview.png`` in the
    current folder when no ``--out`` is given.

    Raises:
        BadInputError: ``out`` is not an image file name (.png, .jpg, .jpeg, .webp).
    """
    if out is None:
        return Path(f"{Path(image).stem}-preview.png")
    out = Path(out)
    if out.suffix.lower() not in PREVIEW_SUFFIXES:
        raise BadInputError(
            f"--out for --preview is the grid image: give a file name ending in "
            f"{', '.join(PREVIEW_SUFFIXES)}, got {str(out)!r}"
        )
    return out


def render_preview(
    image: Path, out: Path | None = None, *, seed: int = 0, profile: str = "realesrgan", draws: int = 4,
    tile: int = 384, spatial_blur: bool = False,
) -> Path:
    """Write a grid: the input, d1–d4 and ``draws`` random draws, each with its parameters.

    The input is resized so its longer side is ``tile`` px and degraded at that size, so every
    tile shows the degradation 1:1 (the LQs are resized back to the input size). ``out`` defaults
    to ``<image stem>-preview.png`` in the current folder (:func:`preview_path`).
    """
    from PIL import Image, ImageDraw, ImageFont

    from inscene.degradations import apply, describe, preset, sample_params

    out = preview_path(image, out)
    rgb = imageio.decode_image(image)
    h, w = rgb.shape[:2]
    s = tile / max(h, w)
    size = (max(4, round(w * s)), max(4, round(h * s)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    panels: list[tuple[str, np.ndarray]] = [("input", small)]
    for name in ("d1", "d2", "d3", "d4"):
        p = preset(name, spatial_blur=spatial_blur)
        lq = apply(small, p)
        panels.append((f"{name}  PSNR {_psnr(small, lq):.2f} dB\n" + describe(p), lq))
    for k in range(draws):
        p = sample_params(version_seed(seed, "preview", k), profile, spatial_blur=spatial_blur)
        lq = apply(small, p)
        panels.append((f"draw {k}  PSNR {_psnr(small, lq):.2f} dB\n" + describe(p), lq))
    font = ImageFont.load_default()
    text_h = 15 * 8
    cols = 5 if len(panels) > 4 else len(panels)
    rows = -(-len(panels) // cols)
    tw, th = size[0], size[1] + text_h
    text_w = 64
    tw = max(tw, 6 * text_w)
    grid = Image.new("RGB", (cols * tw, rows * th), "white")
    draw = ImageDraw.Draw(grid)
    for i, (label, arr) in enumerate(panels):
        x0, y0 = (i % cols) * tw, (i // cols) * th
        grid.paste(Image.fromarray(arr), (x0, y0))
        lines: list[str] = []
        for line in label.splitlines():
            while len(line) > text_w:
                cut = line.rfind(" ", 0, text_w)
                cut = cut if cut > 0 else text_w
                lines.append(line[:cut])
                line = "  " + line[cut:].lstrip()
            lines.append(line)
        draw.multiline_text((x0 + 4, y0 + size[1] + 3), "\n".join(lines[:8]), fill="black", font=font, spacing=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out


# ---- demo ---------------------------------------------------------------------------------------


def demo_step(data_root: Path, workdir: Path) -> dict[str, Any]:
    """Degrade the demo's dataset once per image, LQ kept at 1/4 scale so upsamplers can be compared.

    Real-ESRGAN x4's training ranges (the default profile), one version, seed 0, in this process.

    Returns:
        ``dataset`` (the degraded folder), ``accepted``, ``errors``, ``profile``, ``seconds``.
    """
    options = DegradeOptions(versions=1, seed=0, lq_size="lq")
    result = run_degrade(Path(data_root), Path(workdir) / "degraded", options, partition_size=4,
                         console=Console(quiet=True))
    return {
        "dataset": result.out,
        "accepted": result.accepted,
        "errors": sum(s.errors for s in result.summaries.values()),
        "profile": options.profile,
        "seconds": round(result.seconds, 1),
    }
