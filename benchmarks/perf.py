"""Speed benchmarks, each printed as a ratio against a baseline run in the same process.

Usage::

    python -m benchmarks.perf shards [--n 2000] [--size-kb 300] [--rounds 3]

Every benchmark prints a few human lines and, as its last line, ``ratio=<ours/baseline>``.
Add one with ``@register("name", help=..., arguments=...)`` on a function taking the parsed
arguments and returning the ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark: ``run(args) -> ratio`` and the options it adds to its subcommand."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], float]
    arguments: Callable[[argparse.ArgumentParser], None]


BENCHMARKS: dict[str, Benchmark] = {}


def register(
    name: str, *, help: str, arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None
) -> Callable[[Callable[[argparse.Namespace], float]], Callable[[argparse.Namespace], float]]:
    """Decorator adding a benchmark function to :data:`BENCHMARKS` under ``name``."""

    def wrap(fn: Callable[[argparse.Namespace], float]) -> Callable[[argparse.Namespace], float]:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = Benchmark(name, help, fn, arguments)
        return fn

    return wrap


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


# --------------------------------------------------------------------------------------------
# shards: ShardWriter against plain tarfile


def _shards_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=2000, help="samples per run (default 2000)")
    p.add_argument("--size-kb", type=int, default=300, help="image member size in KB (300)")
    p.add_argument("--max-count", type=int, default=1000, help="samples per shard (1000)")
    p.add_argument("--rounds", type=int, default=5, help="alternating runs of each (5)")


def _payloads(n_blobs: int, size: int) -> list[bytes]:
    # A small pool of random (incompressible) blobs, reused round-robin: the benchmark measures
    # the writers, not the allocation of N fresh buffers.
    return [os.urandom(size) for _ in range(n_blobs)]


def _meta(i: int) -> dict:
    return {"identity_id": f"id{i // 10:05d}", "index": i, "score": i / 7.0}


def _run_tarfile(out: Path, blobs: list[bytes], n: int, max_count: int) -> None:
    """Baseline: the same members with plain tarfile, same rollover by count, no manifests."""
    tf = None
    shard = 0
    for i in range(n):
        if i % max_count == 0:
            if tf is not None:
                tf.close()
            tf = tarfile.open(out / f"bench-{shard:05d}.tar", "w")
            shard += 1
        key = f"s{i:07d}"
        for name, data in (
            (f"{key}.img.png", blobs[i % len(blobs)]),
            (f"{key}.json", json.dumps(_meta(i)).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    if tf is not None:
        tf.close()


def _run_ours(out: Path, blobs: list[bytes], n: int, max_count: int) -> None:
    from inscene.shards import ShardWriter

    with ShardWriter(out, "train", "bench", max_count=max_count) as w:
        for i in range(n):
            w.write(f"s{i:07d}", {"img.png": blobs[i % len(blobs)]}, _meta(i))


def _rss_profile(out: Path, blobs: list[bytes], n: int, max_count: int) -> list[tuple[int, int]]:
    """RSS every 100 samples while writing, each sample a fresh copy (as from a decoder)."""
    from inscene.shards import ShardWriter

    samples = [(0, _rss())]
    with ShardWriter(out, "train", "bench", max_count=max_count) as w:
        for i in range(n):
            w.write(f"s{i:07d}", {"img.png": bytes(bytearray(blobs[i % len(blobs)]))}, _meta(i))
            if (i + 1) % 100 == 0:
                samples.append((i + 1, _rss()))
    return samples


def _timed(fn: Callable[[Path], object], parent: Path) -> tuple[float, object]:
    out = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    try:
        t0 = time.perf_counter()
        result = fn(out)
        return time.perf_counter() - t0, result
    finally:
        shutil.rmtree(out, ignore_errors=True)


@register("shards", help="ShardWriter vs plain tarfile write throughput", arguments=_shards_arguments)
def bench_shards(args: argparse.Namespace) -> float:
    """ShardWriter (tar + manifests + sha256s + fsync) against plain tarfile writing the same members.

    Both write the same member names and bytes with the same rollover by count, alternating, in
    one process; the best run of each is compared (other processes on the machine only ever
    slow a run down). Throughput counts the payload bytes (members + metadata).
    """
    n, size, max_count = args.n, args.size_kb * 1024, args.max_count
    blobs = _payloads(16, size)
    payload_mb = sum(len(blobs[i % len(blobs)]) + len(json.dumps(_meta(i))) for i in range(n)) / 1e6

    ours_s: list[float] = []
    base_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="inscene-perf-") as tmp:
        parent = Path(tmp)
        # Warm-up: imports (pyarrow for the manifests), thread start-up, first file creation.
        _timed(lambda o: _run_tarfile(o, blobs, min(n, 50), max_count), parent)
        _timed(lambda o: _run_ours(o, blobs, min(n, 50), max_count), parent)
        for _ in range(args.rounds):
            base_s.append(_timed(lambda o: _run_tarfile(o, blobs, n, max_count), parent)[0])
            ours_s.append(_timed(lambda o: _run_ours(o, blobs, n, max_count), parent)[0])
        rss = _timed(lambda o: _rss_profile(o, blobs, n, max_count), parent)[1]

    ours = payload_mb / min(ours_s)
    base = payload_mb / min(base_s)
    print(
        f"shards: {n} samples x {args.size_kb} KB ({payload_mb:.0f} MB), {max_count} per shard, "
        f"best of {args.rounds} alternating runs"
    )
    print(f"tarfile baseline : {base:7.1f} MB/s  (runs: {_fmt(base_s, payload_mb)})")
    print(f"ShardWriter      : {ours:7.1f} MB/s  (runs: {_fmt(ours_s, payload_mb)})")
    rss0 = rss[0][1]
    at10 = next(r for i, r in rss if i >= n // 10)
    peak = max(r for _, r in rss)
    print(
        f"writer RSS growth (fresh bytes per sample): {(at10 - rss0) / 2**20:+.1f} MiB at 10% of samples, "
        f"{(rss[-1][1] - rss0) / 2**20:+.1f} MiB at 100%, peak {(peak - rss0) / 2**20:+.1f} MiB"
    )
    return ours / base


def _fmt(seconds: list[float], mb: float) -> str:
    return ", ".join(f"{mb / s:.0f}" for s in seconds)


# --------------------------------------------------------------------------------------------
# degrade: our degradation pipeline against BasicSR's functions (benchmarks/perf_degrade.py)

from benchmarks.perf_degrade import arguments as _degrade_arguments  # noqa: E402
from benchmarks.perf_degrade import bench_degrade  # noqa: E402

register(
    "degrade", help="degradation pipeline vs BasicSR's functions, images/s", arguments=_degrade_arguments
)(bench_degrade)

# --------------------------------------------------------------------------------------------
# faces: downscaled vs full-resolution face detection (benchmarks/perf_faces.py)

from benchmarks import perf_faces as _perf_faces  # noqa: E402

register("faces", help=_perf_faces.HELP, arguments=_perf_faces.arguments)(_perf_faces.run)

# --------------------------------------------------------------------------------------------
# evaluate: the evaluator (cold, warm cache) vs a naive per-image pyiqa loop (perf_evaluate.py)

from benchmarks import perf_evaluate as _perf_evaluate  # noqa: E402

register("evaluate", help=_perf_evaluate.HELP, arguments=_perf_evaluate.arguments)(_perf_evaluate.run)

# --------------------------------------------------------------------------------------------
# fadex: Stage I (align + warp back, gt backend) vs face detection alone (perf_fadex.py)

from benchmarks import perf_fadex as _perf_fadex  # noqa: E402

register("fadex", help=_perf_fadex.HELP, arguments=_perf_fadex.arguments)(_perf_fadex.run)

# --------------------------------------------------------------------------------------------
# develop-raw: our RAW development path vs bare rawpy.postprocess (perf_develop_raw.py)

from benchmarks import perf_develop_raw as _perf_develop_raw  # noqa: E402

register("develop-raw", help=_perf_develop_raw.HELP, arguments=_perf_develop_raw.arguments)(_perf_develop_raw.run)


# --------------------------------------------------------------------------------------------
# filter-real: Stages 1-2 vs decode-only throughput (benchmarks/perf_filter_real.py)

from benchmarks import perf_filter_real as _perf_filter_real  # noqa: E402

register("filter-real", help=_perf_filter_real.HELP, arguments=_perf_filter_real.arguments)(_perf_filter_real.run)


# --------------------------------------------------------------------------------------------
# build-synthetic: per-image overhead around the (tiny) generator (benchmarks/perf_build_synthetic.py)

from benchmarks import perf_build_synthetic as _perf_build_synthetic  # noqa: E402

register("build-synthetic", help=_perf_build_synthetic.HELP, arguments=_perf_build_synthetic.arguments)(
    _perf_build_synthetic.run
)

# --------------------------------------------------------------------------------------------
# restorer: FaDeX + MapNet token overhead vs a tiny SD-Turbo UNet step (benchmarks/perf_restorer.py)

from benchmarks import perf_restorer as _perf_restorer  # noqa: E402

register("restorer", help=_perf_restorer.HELP, arguments=_perf_restorer.arguments)(_perf_restorer.run)
register("restorer-stage2", help=_perf_restorer.HELP_STAGE2, arguments=_perf_restorer.arguments_stage2)(
    _perf_restorer.run_stage2
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    for bench in BENCHMARKS.values():
        bench.arguments(sub.add_parser(bench.name, help=bench.help))
    args = parser.parse_args(argv)
    result = BENCHMARKS[args.name].run(args)
    # a benchmark may return (ratio, "more=values") to extend the last line
    ratio, extra = result if isinstance(result, tuple) else (result, "")
    print(f"ratio={ratio:.3f}" + (f" {extra}" if extra else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
