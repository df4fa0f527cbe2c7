"""`inscene demo`: the toolkit end to end, offline, on CPU, on what installed packages ship.

Inputs are real photos shipped by scikit-image (astronaut, coffee, chelsea) and insightface (the
group photo ``data/images/t1.jpg``), generated images that exercise the safe decoder (EXIF-rotated
JPEG, CMYK JPEG, 16-bit PNG, palette+alpha PNG) and deliberately bad files (truncated JPEG, text
named .jpg, an image too small to keep). They go through the stage runner (on Dask workers unless
told otherwise), are written as WebDataset shards with parquet manifests and decision logs,
verified, loaded back with HF ``datasets`` and ``webdataset``, and summarised in a table.

Then the tour of the other commands, each on its own tiny offline input, in this process:
``filter-real`` over the shipped photos (its funnel), ``develop-raw`` on generated DNGs (JPEG-XL
ones included) into a test split, ``degrade`` of the demo dataset, ``evaluate`` of ``lq`` and
``bicubic`` on it with the weight-free metrics and the leaderboard printed, and a dry-run
``publish`` of the demo dataset loaded back with :func:`inscene.load`. A step that fails is shown
as FAILED with its error and the demo exits 1; the others still run.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from inscene import imageio
from inscene.config import InsceneConfig
from inscene.schema import Provenance, Sample
from inscene.stages import Item, Rejection, RunSummary, run_stages

SPLIT = "train"
SUBSET = "demo"
# The demo keeps images whose shorter side is >= 128 px (a demo threshold, not the paper's:
# filter-real applies §6.2's 1000/1024 px). It shows a size rejection on the 48 px thumbnail.
DEMO_MIN_SHORT_SIDE = 128
DEMO_PARTITION_SIZE = 4


# ---- stages --------------------------------------------------------------------------------------


@dataclass
class DecodeStage:
    """Read the original bytes, hash them, and decode safely to RGB uint8."""

    max_pixels: int = imageio.DEFAULT_MAX_PIXELS
    name: str = "decode"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing heavy to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        data, _ = imageio.read_source(item.source)
        item.meta["sha256"] = imageio.sha256_bytes(data)
        item.measured["file_bytes"] = len(data)
        try:
            rgb = imageio.decode_image(data, max_pixels=self.max_pixels)
        except imageio.ImageDecodeError as exc:
            return Rejection(self.name, exc.reason)
        item.data["rgb"] = rgb
        item.measured["height"], item.measured["width"] = int(rgb.shape[0]), int(rgb.shape[1])
        item.backends["decoder"] = f"pillow-{Image.__version__}"
        return item


@dataclass
class SizeStage:
    """Reject images whose shorter side is below a threshold."""

    min_short_side: int = DEMO_MIN_SHORT_SIDE
    name: str = "size"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing heavy to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        short = min(item.data["rgb"].shape[:2])
        item.measured["short_side"] = int(short)
        if short < self.min_short_side:
            return Rejection(self.name, f"short_side {short} < {self.min_short_side}")
        return item


@dataclass
class FaceStage:
    """Detect faces with the embedded dlib detector and record them (the demo keeps face-less images)."""

    detector: str = "dlib"
    name: str = "faces"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Load the detector's models once per worker."""
        from inscene.faces import create_detector

        self._det = create_detector(self.detector)

    def __call__(self, item: Item) -> Item | Rejection:
        faces = self._det.detect(item.data["rgb"])
        item.data["faces"] = faces
        item.measured["n_faces"] = len(faces)
        h, w = item.data["rgb"].shape[:2]
        item.measured["face_area_fraction"] = max((f.area for f in faces), default=0.0) / float(h * w)
        item.backends["detector"] = faces[0].backend if faces else self._det.backend
        return item


@dataclass
class EncodeStage:
    """Encode the decoded image losslessly (no metadata) and build the Sample record."""

    name: str = "encode"
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self) -> None:
        """Nothing heavy to load."""

    def __call__(self, item: Item) -> Item | Rejection:
        rgb = item.data.pop("rgb")
        item.data["png"] = imageio.encode_image(rgb, "png")
        sample = Sample(
            key=item.key,
            split=SPLIT,
            subset=SUBSET,
            width=int(rgb.shape[1]),
            height=int(rgb.shape[0]),
            faces=item.data.pop("faces", []),
            provenance=Provenance(
                source=os.path.basename(item.source),
                sha256=item.meta["sha256"],
                backends=dict(item.backends),
            ),
        )
        item.meta = sample.to_meta()
        return item


@dataclass
class ShardSink:
    """Writes one partition's accepted items to one shard (shard index = partition index)."""

    root: str
    split: str
    subset: str

    def __call__(self, partition: int, items: list[Item]) -> None:
        from inscene.shards import ShardWriter

        with ShardWriter(
            self.root, self.split, self.subset, start_shard=partition, max_count=max(len(items), 1)
        ) as writer:
            for item in items:
                writer.write(item.key, {"png": item.data["png"]}, item.meta)


# ---- inputs --------------------------------------------------------------------------------------


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.exists() else None


def make_inputs(folder: Path) -> list[Item]:
    """Write the demo's input files and return one item per file (sorted, so reruns resume)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    astronaut = skimage.data.astronaut()
    files["astronaut.png"] = imageio.encode_image(astronaut, "png")
    files["coffee.jpg"] = imageio.encode_image(skimage.data.coffee(), "jpeg", quality=92)
    files["chelsea.webp"] = imageio.encode_image(skimage.data.chelsea(), "webp", quality=90)
    group = _package_file("insightface", "data", "images", "t1.jpg")
    if group is not None:
        files["insightface-group.jpg"] = group.read_bytes()

    # generated inputs that exercise the decoder
    rotated = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, k=1)))  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display upright
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", quality=92, exif=exif)
    files["astronaut-exif-rotated.jpg"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).convert("CMYK").save(buf, "JPEG", quality=92)
    files["coffee-cmyk.jpg"] = buf.getvalue()
    yy, xx = np.mgrid[0:300, 0:400]
    ramp16 = np.stack([xx * 163, yy * 218, (xx + yy) * 93], axis=-1).astype(np.uint16)
    files["ramp-16bit.png"] = imageio.encode_image(ramp16, "png")
    pal = Image.fromarray(skimage.data.chelsea()).convert("RGBA").quantize(64)
    pal.info["transparency"] = 0
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    files["chelsea-palette-alpha.png"] = buf.getvalue()
    files["thumbnail-48px.png"] = imageio.encode_image(astronaut[::10, ::10][:48, :48], "png")

    # bad inputs: each must be rejected with its reason, not crash the run
    files["truncated.jpg"] = files["coffee.jpg"][: len(files["coffee.jpg"]) // 3]
    files["not-an-image.jpg"] = b"this is a text file with a .jpg name\n"

    items = []
    for name in sorted(files):
        path = folder / name
        if not path.exists() or path.read_bytes() != files[name]:
            path.write_bytes(files[name])
        key = name.rsplit(".", 1)[0].replace(".", "_")
        items.append(Item(key=key, source=str(path)))
    return items


# ---- the run -------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """What the demo produced and checked."""

    out: Path
    summary: RunSummary
    verify_ok: bool
    hf_rows: int
    wds_rows: int
    seconds: float
    faces: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every check passed, the expected samples were written and every tour step worked."""
        return (
            self.verify_ok
            and self.summary.errors == 0
            and self.hf_rows == self.summary.accepted == self.wds_rows
            and all(step.get("ok") for step in self.steps.values())
        )


def run_demo(out: Path, cluster: Any = None, console: Console | None = None, tour: bool = True) -> DemoResult:
    """Run the demo into ``out``.

    Args:
        out: output folder (inputs, shards, manifests, decision logs, index.json, and one folder
            per tour step).
        cluster: a ``ClusterOptions`` to run the stages on Dask workers; None runs in this process.
        console: where to print progress and the summary.
        tour: also run the other commands' steps (:func:`run_tour`).
    """
    console = console or Console()
    t0 = time.perf_counter()
    out = Path(out)
    config = InsceneConfig()
    items = make_inputs(out / "inputs")
    stages = [DecodeStage(max_pixels=config.imageio.max_pixels), SizeStage(), FaceStage(), EncodeStage()]
    data_root = out / "dataset"
    sink = ShardSink(str(data_root), SPLIT, SUBSET)
    console.print(f"[bold]inscene demo[/] -> {out} ({len(items)} inputs)")

    client = None
    try:
        if cluster is not None:
            from inscene.runtime import make_client

            client = make_client(cluster)
        summary = run_stages(stages, items, out, sink, partition_size=DEMO_PARTITION_SIZE, client=client)
    finally:
        if client is not None:
            client.close()
            if getattr(client, "cluster", None) is not None:
                client.cluster.close()

    from inscene.shards import hf_data_files, verify_dataset, write_index

    write_index(data_root)
    (out / "config.json").write_text(json.dumps(config.flat(), indent=2, sort_keys=True))
    report = verify_dataset(data_root)
    hf_rows, wds_rows = _load_back(data_root, hf_data_files)
    showcase = faces_showcase(data_root, out / "faces")
    steps = run_tour(out, data_root, console) if tour else {}
    result = DemoResult(out, summary, report.ok, hf_rows, wds_rows, time.perf_counter() - t0, showcase, steps)
    console.print(_summary_table(result, len(stages)))
    return result


# ---- the tour of the other commands ----------------------------------------------------------------


def _filter_real(out: Path, data_root: Path, console: Console, done: dict[str, Any]) -> dict[str, Any]:
    from pipelines.filter_real import demo_step

    r = demo_step(out)
    funnel = " -> ".join(f"{stage} {n}" for stage, n in r["funnel"].items())
    r["ok"] = r["errors"] == 0 and r["accepted"] > 0
    r["line"] = f"{funnel}; kept {r['accepted']}, Stage 3 by {r['iqa']}, faces by {r['detector']}"
    return r


def _develop_raw(out: Path, data_root: Path, console: Console, done: dict[str, Any]) -> dict[str, Any]:
    from pipelines.develop_raw import demo_step

    r = demo_step(out)
    decoders = ", ".join(f"{d} x{n}" for d, n in sorted(r["decoders"].items()))
    r["ok"] = r["errors"] == 0 and r["developed"] > 0 and r["hf_rows"].get("test") == r["developed"]
    r["line"] = (f"{r['developed']} of {r['captures']} captures developed ({decoders}), {r['rejected']} rejected, "
                 f"{r['references']} references; HF rows {r['hf_rows']}")
    return r


def _degrade(out: Path, data_root: Path, console: Console, done: dict[str, Any]) -> dict[str, Any]:
    from pipelines.degrade import demo_step

    r = demo_step(data_root, out)
    r["ok"] = r["errors"] == 0 and r["accepted"] > 0
    r["line"] = f"{r['accepted']} LQ (x1/4, {r['profile']} profile, seed 0) in {r['dataset']}"
    return r


def _evaluate(out: Path, data_root: Path, console: Console, done: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.commands import evaluate_demo_split

    if not done.get("degrade", {}).get("ok"):
        raise RuntimeError("needs the degrade step's LQ, which failed")
    degraded = done["degrade"]["dataset"]
    ev = evaluate_demo_split(degraded, out / "evaluation", split="demo", shard_split=SPLIT, subset=SUBSET,
                             console=console)
    rows = [row for report in ev.reports for row in report.rows]
    psnr = ", ".join(f"{row.method} {row.metrics['psnr'].mean:.2f} dB" for row in rows
                     if "psnr" in row.metrics and row.metrics["psnr"].mean is not None)
    return {"ok": ev.ok, "line": f"lq, bicubic on {rows[0].n_samples if rows else 0} images: PSNR {psnr}; "
                                 f"leaderboard {ev.leaderboard.html}"}


def _publish(out: Path, data_root: Path, console: Console, done: dict[str, Any]) -> dict[str, Any]:
    from pipelines.publish import demo_step

    r = demo_step(data_root, out / "publish")
    r["ok"] = r["hf_rows"] == r["webdataset_rows"] == r["samples"] > 0
    r["line"] = (f"dry run {r['folder']} ({', '.join(r['configs'])}); loaded back: {r['hf_rows']} rows (HF), "
                 f"{r['webdataset_rows']} (webdataset)")
    return r


#: The tour, in order: each step takes (out, dataset folder, console, the earlier steps' results)
#: and returns at least ``ok`` and ``line``.
TOUR: dict[str, Callable[[Path, Path, Console, dict[str, Any]], dict[str, Any]]] = {
    "filter-real": _filter_real,
    "develop-raw": _develop_raw,
    "degrade": _degrade,
    "evaluate": _evaluate,
    "publish": _publish,
}


def run_tour(out: Path, data_root: Path, console: Console) -> dict[str, dict[str, Any]]:
    """Run every :data:`TOUR` step; a failing step is recorded (``ok`` False, its error) and the rest go on."""
    steps: dict[str, dict[str, Any]] = {}
    for name, step in TOUR.items():
        console.print(f"demo: {name} ...", markup=False, highlight=False)
        t0 = time.perf_counter()
        try:
            r = step(out, data_root, console, steps)
        except Exception as exc:  # noqa: BLE001 - shown in the summary; the demo exits 1
            (out / f"{name}-error.txt").write_text(traceback.format_exc())
            r = {"ok": False, "line": f"{type(exc).__name__}: {exc} (traceback in {out / f'{name}-error.txt'})"}
        r["seconds"] = time.perf_counter() - t0
        steps[name] = r
    return steps


def faces_showcase(data_root: Path, folder: Path) -> dict[str, Any]:
    """Draw the detected faces of the photo with the most faces, align its largest face to the
    canonical 512x512 frame and paste it back; returns what was written."""
    from inscene.faces.align import align_face, paste_back
    from inscene.faces.draw import draw_faces
    from inscene.schema import Sample
    from inscene.shards import ShardReader

    best = None
    for shard_sample in ShardReader(data_root, split=SPLIT, subset=SUBSET):
        record = Sample.from_meta(shard_sample.meta)
        if record.faces and (best is None or len(record.faces) > len(best[1].faces)):
            best = (shard_sample.images["png"], record)
    if best is None:
        return {"faces": 0}
    rgb, record = best
    folder.mkdir(parents=True, exist_ok=True)
    face = max(record.faces, key=lambda f: f.area)
    crop, alignment = align_face(rgb, face, size=512)
    pasted = paste_back(rgb, crop, alignment)
    files = {
        "drawn": folder / f"{record.key}-faces.png",
        "aligned": folder / f"{record.key}-aligned512.png",
        "pasted": folder / f"{record.key}-pasteback.png",
    }
    files["drawn"].write_bytes(imageio.encode_image(draw_faces(rgb, record.faces), "png"))
    files["aligned"].write_bytes(imageio.encode_image(crop, "png"))
    files["pasted"].write_bytes(imageio.encode_image(pasted, "png"))
    # the paste-back of an unmodified crop must reproduce the photo (alignment round trip)
    err = float(np.abs(pasted.astype(np.int16) - rgb.astype(np.int16)).mean())
    return {
        "key": record.key,
        "faces": len(record.faces),
        "detector": face.backend,
        "pasteback_mean_abs_err": err,
        **files,
    }


def _load_back(root: Path, hf_data_files: Any) -> tuple[int, int]:
    import datasets
    import webdataset as wds

    files = hf_data_files(root)[SPLIT]
    datasets.disable_progress_bars()
    ds = datasets.load_dataset(
        "webdataset", data_files={SPLIT: files}, split=SPLIT, cache_dir=str(root.parent / ".hf-cache")
    )
    hf_rows = len(ds)
    wds_rows = sum(1 for _ in wds.WebDataset(files, shardshuffle=False, empty_check=False))
    return hf_rows, wds_rows


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def _summary_table(result: DemoResult, n_stages: int) -> Table:
    s = result.summary
    table = Table(title="inscene demo summary", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("inputs", str(len(s.decisions)))
    table.add_row("accepted", str(s.accepted))
    table.add_row("rejected", str(s.rejected))
    for label, count in sorted(s.by_reason.items()):
        table.add_row("  rejected by", f"{label} x{count}")
    table.add_row("errors", str(s.errors))
    table.add_row("stages", str(n_stages))
    table.add_row("partitions (resumed)", f"{s.partitions} ({s.skipped_partitions})")
    table.add_row("verify", "ok" if result.verify_ok else "PROBLEMS (run inscene verify)")
    table.add_row("HF datasets rows", str(result.hf_rows))
    table.add_row("webdataset samples", str(result.wds_rows))
    if "m.n_faces" in s.decisions:
        n_faces = s.decisions["m.n_faces"].fillna(0)
        table.add_row(
            "faces detected",
            f"{int(n_faces.sum())} in {int((n_faces > 0).sum())} images ({result.faces.get('detector', '-')})",
        )
    if result.faces.get("faces"):
        table.add_row("aligned 512 + paste-back", f"{result.faces['aligned']} "
                      f"(paste-back mean |err| {result.faces['pasteback_mean_abs_err']:.2f})")
    table.add_row("dataset folder", str(result.out / "dataset"))
    for name, step in result.steps.items():
        mark = "" if step.get("ok") else "[red]FAILED[/] "
        table.add_row(name, f"{mark}{_escape(step.get('line', ''))} [{step['seconds']:.1f}s]")
    table.add_row("seconds", f"{result.seconds:.1f}")
    table.add_row("result", "[green]ok[/]" if result.ok else "[red]FAILED[/]")
    return table
