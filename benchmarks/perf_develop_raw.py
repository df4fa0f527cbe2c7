"""``python -m benchmarks.perf develop-raw``: our RAW development path vs bare ``rawpy.postprocess``.

Provenance: Face2Scene (arXiv 2603.16570) §6.3 develops phone RAW captures with rawpy; issue 5 asks
that ``inscene develop-raw`` add almost nothing on top of LibRaw (ratio <= 1.1).

``--n`` generated Bayer DNGs of ``--width`` x ``--height`` px (4000x3000 = 12 MP by default; the
output states the real megapixel count), made by ``inscene.dng`` (a photo mapped to camera space,
mosaicked, 12-bit, tiled, with a preview IFD and EXIF like a phone's), are developed, in this process
and alternating per file, by

* ours: :func:`inscene.raw.develop_file`, what each capture goes through in the pipeline: read the
  file, sha256 of its bytes, DNG header checks (tifffile), LibRaw development with the recorded
  settings, capture metadata (rawpy + exifread);
* bare: ``rawpy.imread(path).postprocess(**same parameters)``.

The ratio (last line) is ours / bare total time of the development path, as issue 5 defines it.
An end-to-end line then times what the command does per capture, on ``--e2e`` files: the
command's own stages (:class:`pipelines.develop_raw.DevelopStage`, ``FaceStage`` with the configured
detector, ``EncodeStage`` to the configured output format, PNG by default), per stage and in total,
against the median bare ``rawpy.postprocess`` time per file of the set (all files are the same
size). JPEG-XL DNG 1.7 files (``--jxl``, lossless JPEG-XL tiles) are then timed: JPEG-XL tile
decoding alone, and the full development, per file, against the uncompressed twin.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

HELP = ("RAW development: our develop_file vs bare rawpy.postprocess on generated DNGs (12 MP by default); "
        "end-to-end per capture; JPEG-XL DNG decode time")


def arguments(p: argparse.ArgumentParser) -> None:
    """Options of the ``develop-raw`` benchmark."""
    p.add_argument("--n", type=int, default=20, help="DNG files developed by each path (20)")
    p.add_argument("--width", type=int, default=4000, help="raw width in px (4000)")
    p.add_argument("--height", type=int, default=3000, help="raw height in px (3000)")
    p.add_argument("--jxl", type=int, default=2, help="JPEG-XL DNG files timed (2; 0 skips)")
    p.add_argument("--e2e", type=int, default=3,
                   help="files run end to end through the command's stages: develop, faces, encode (3; 0 skips)")
    p.add_argument("--workdir", type=Path, default=None, help="where to write the DNGs (default: a temp dir)")


def _scene(width: int, height: int) -> np.ndarray:
    """A linear-light scene: scikit-image's astronaut, upscaled."""
    import cv2
    import skimage.data

    from inscene.dng import srgb_to_linear

    photo = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    return srgb_to_linear(photo)


def _write_files(folder: Path, n: int, width: int, height: int) -> tuple[list[Path], np.ndarray]:
    from inscene.dng import scene_to_raw, write_dng

    base = scene_to_raw(_scene(width, height), exposure=0.9)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        shift = rng.integers(-8, 9, size=(height, 1), dtype=np.int16)  # distinct files, cheaply
        raw = np.clip(base.astype(np.int16) + shift, 0, 4095).astype(np.uint16)
        path = folder / f"IMG_{i:04d}.dng"
        path.write_bytes(write_dng(raw, iso=(3200, 1600, 800)[i % 3]))
        paths.append(path)
    return paths, base


def run(args: argparse.Namespace) -> float:
    """Run the benchmark; prints its lines and returns ours/bare time."""
    import rawpy

    from inscene.config import RawSettings
    from inscene.raw import develop, develop_file, jpegxl_available, jpegxl_dng_to_uncompressed, rawpy_params

    settings = RawSettings()
    params = rawpy_params(settings)
    own = args.workdir is None
    folder = Path(tempfile.mkdtemp(prefix="inscene-perf-raw-")) if own else Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        paths, base = _write_files(folder, args.n, args.width, args.height)
        mp = args.width * args.height / 1e6
        size_mb = statistics.mean(p.stat().st_size for p in paths) / 1e6
        print(f"files: {len(paths)} Bayer DNGs, {mp:.1f} MP, {size_mb:.1f} MB each "
              f"(written in {time.perf_counter() - t0:.1f} s); settings: {settings.demosaic}, "
              f"{settings.output_bps}-bit, camera WB, auto-bright {settings.auto_bright}")

        def bare(path: Path) -> np.ndarray:
            with rawpy.imread(str(path)) as raw:
                return raw.postprocess(**params)

        def ours(path: Path) -> np.ndarray:
            return develop_file(path, settings).rgb

        same = np.array_equal(bare(paths[0]), ours(paths[0]))  # also warms both paths up
        t_bare, t_ours = [], []
        for i, path in enumerate(paths):
            order = ((bare, t_bare), (ours, t_ours)) if i % 2 == 0 else ((ours, t_ours), (bare, t_bare))
            for fn, acc in order:
                t = time.perf_counter()
                fn(path)
                acc.append(time.perf_counter() - t)
        print(f"bare rawpy.postprocess: {sum(t_bare):.2f} s total, {statistics.median(t_bare):.3f} s/file median")
        print(f"ours (develop_file):    {sum(t_ours):.2f} s total, {statistics.median(t_ours):.3f} s/file median; "
              f"identical pixels: {same}")
        if args.e2e > 0:
            _end_to_end(paths[: args.e2e], settings, statistics.median(t_bare))
        if args.jxl > 0:
            if jpegxl_available():
                _jpegxl(folder, base, args.jxl, settings, develop, jpegxl_dng_to_uncompressed, mp)
            else:
                print("jpeg-xl: skipped (imagecodecs without JPEG XL)")
        return sum(t_ours) / sum(t_bare)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def _end_to_end(paths: list[Path], settings, bare_median: float) -> None:
    """What ``inscene develop-raw`` does per capture, through its own stages (not part of the ratio)."""
    from inscene.config import InsceneConfig
    from inscene.stages import Item, Rejection
    from pipelines.develop_raw import TEST_SPLIT, TEST_SUBSET, DevelopStage, EncodeStage, FaceStage

    detector = InsceneConfig().faces.detector
    stages = [DevelopStage(settings), FaceStage(detector),
              EncodeStage(TEST_SPLIT, TEST_SUBSET, "lq", settings.output_format, settings.jpeg_quality)]
    for stage in stages:
        stage.setup()

    def one(path: Path) -> dict[str, float]:
        item: Item | Rejection = Item(key=path.stem, source=str(path), data={"identity": "bench", "rel": path.name})
        times = {}
        for stage in stages:
            t = time.perf_counter()
            item = stage(item)
            times[stage.name] = time.perf_counter() - t
            if isinstance(item, Rejection):
                raise RuntimeError(f"{path.name}: {item.stage}: {item.reason}")
        return times

    one(paths[0])  # load the detector's models
    runs = [one(p) for p in paths]
    med = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
    total = statistics.median(sum(r.values()) for r in runs)
    parts = ", ".join(f"{name} {v:.2f} s" for name, v in med.items())
    print(f"end to end per capture (the command's stages: develop + {detector} face detection + "
          f"{settings.output_format.upper()} encode), {len(runs)} files: {total:.2f} s/file median ({parts}) "
          f"= {total / bare_median:.2f}x bare rawpy.postprocess ({bare_median:.3f} s/file; not the ratio)")


def _jpegxl(folder: Path, base: np.ndarray, n: int, settings, develop, to_uncompressed, mp: float) -> None:
    from inscene.dng import write_dng

    t_enc, t_dec, t_dev, t_twin = [], [], [], []
    for i in range(n):
        t = time.perf_counter()
        data = write_dng(base, compression="jpegxl", jxl_effort=1)
        t_enc.append(time.perf_counter() - t)
        twin = write_dng(base)
        t = time.perf_counter()
        to_uncompressed(data)
        t_dec.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = develop(data, settings).rgb
        t_dev.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = develop(twin, settings).rgb
        t_twin.append(time.perf_counter() - t)
        if i == 0:
            print(f"jpeg-xl DNG: {len(data) / 1e6:.1f} MB (uncompressed twin {len(twin) / 1e6:.1f} MB), "
                  f"identical to the twin: {np.array_equal(out, ref)}; written in {t_enc[0]:.1f} s (effort 1)")
    print(f"jpeg-xl DNG decode (tiles -> uncompressed DNG) per {mp:.1f} MP file: {statistics.median(t_dec):.2f} s")
    print(f"jpeg-xl DNG develop per {mp:.1f} MP file: {statistics.median(t_dev):.2f} s "
          f"(uncompressed twin {statistics.median(t_twin):.2f} s)")
