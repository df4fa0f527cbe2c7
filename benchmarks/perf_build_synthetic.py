"""``python -m benchmarks.perf build-synthetic``: the pipeline's per-image cost around the generator.

Runs ``inscene build-synthetic`` in this process on real reference photos (scikit-image's
astronaut and three people from insightface's ``t1.jpg``) with InfiniteYou on tiny random weights
(built offline in the real layouts) and the embedded dlib filter, after a warm-up run that loads
every model. Random weights draw noise, which the filter discards after face detection alone; to
also time the path of a kept image (detection, embedding, PNG encoding, journal, shards), a second
run gives the filter the ``compose`` scene of the same prompt and seed after the tiny model has
generated (the tiny model's time still counts as generation). Overhead = wall time - generation
time, per image. The last line is ``ratio=<overhead/generation> overhead_s=<s/image>`` for kept
images (the issue asks for ``overhead_s``; the registry always prints a ratio first).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

HELP = "per-image overhead of build-synthetic around the (tiny) generator"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=6, help="attempts per identity (default 6)")
    p.add_argument("--batch-size", type=int, default=2, help="generator batch size (2)")


def _identities(root: Path) -> Path:
    import importlib.util

    import skimage.data

    from inscene import imageio
    from inscene.faces import create_detector

    spec = importlib.util.find_spec("insightface")
    t1 = imageio.decode_image(Path(next(iter(spec.submodule_search_locations)), "data/images/t1.jpg").read_bytes())
    (root / "astronaut").mkdir(parents=True)
    (root / "astronaut" / "a.jpg").write_bytes(imageio.encode_image(skimage.data.astronaut(), "jpeg", quality=92))
    faces = sorted(create_detector("dlib").detect(t1), key=lambda f: f.box[0])[:3]
    for i, f in enumerate(faces):
        x1, y1, x2, y2 = f.box
        w = x2 - x1
        (root / f"person{i}").mkdir()
        crop = t1[int(max(0, y1 - w)):int(y2 + w), int(max(0, x1 - w)):int(x2 + w)]
        (root / f"person{i}" / "r.jpg").write_bytes(imageio.encode_image(crop, "jpeg", quality=95))
    return root


def _register_scene_generator() -> None:
    from pipelines.generators import register_generator
    from pipelines.generators.compose import ComposeGenerator
    from pipelines.generators.infiniteyou import InfiniteYouGenerator

    @dataclass
    class TinyThenScene(InfiniteYouGenerator):
        """Tiny InfiniteYou generation (timed as generation), then the compose scene for the filter."""

        name: ClassVar[str] = "tiny-then-scene"

        def condition(self, reference_rgb: Any) -> Any:
            return (super().condition(reference_rgb), ComposeGenerator().condition(reference_rgb))

        def generate(self, prompts: list[str], conditions: list[Any], seeds: list[int]) -> list[Any]:
            super().generate(prompts, [c[0] for c in conditions], seeds)
            return ComposeGenerator().generate(prompts, [c[1] for c in conditions], seeds)

    register_generator("tiny-then-scene", TinyThenScene)


def _run(root: Path, out: Path, generator: str, gen_opts: dict[str, Any], n: int, batch: int) -> dict[str, float]:
    import pandas as pd
    from rich.console import Console

    from pipelines.build_synthetic import SyntheticOptions, run_build_synthetic

    options = SyntheticOptions(generator=generator, generator_options=gen_opts, embedder="dlib", per_identity=n,
                               max_attempts=n, val_identities=1, batch_size=batch, identities_per_partition=2)
    t0 = time.perf_counter()
    result = run_build_synthetic(root, out, options, console=Console(quiet=True))
    wall = time.perf_counter() - t0
    att = pd.concat([pd.read_parquet(p) for p in sorted((out / "attempts").glob("*.parquet"))])
    gen = float(att["t_generate_s"].sum())
    return {"images": float(len(att)), "accepted": float(result.accepted), "wall": wall, "generate": gen,
            "filter": float(att["t_filter_s"].sum())}


def run(args: argparse.Namespace) -> tuple[float, str]:
    """Warm up, then time a noise run (all discarded) and a kept-image run; return the kept overhead."""
    from pipelines.generators.tiny import make_tiny_infiniteyou

    _register_scene_generator()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tiny = make_tiny_infiniteyou(tmp_path / "weights")
        root = _identities(tmp_path / "ids")
        gen_opts = {"width": 64, "height": 64, "steps": 2, "lora_specs": (), "id_detector": "dlib", "device": "cpu",
                    "max_sequence_length": 64, "flux_path": str(tiny["flux"]),
                    "infiniteyou_path": str(tiny["infiniteyou"]), "arcface_path": str(tiny["arcface"])}
        _run(root, tmp_path / "warm", "tiny-then-scene", gen_opts, 1, 1)  # loads every model once
        noise = _run(root, tmp_path / "noise", "infiniteyou", gen_opts, args.images, args.batch_size)
        kept = _run(root, tmp_path / "kept", "tiny-then-scene", gen_opts, args.images, args.batch_size)
    lines = []
    for label, r in (("tiny generator (noise, discarded: no face)", noise),
                     ("tiny generator + compose scene (kept, 512x640)", kept)):
        n = r["images"]
        over = (r["wall"] - r["generate"]) / n
        lines.append((label, r, over))
        print(f"{label}: {int(n)} images, {int(r['accepted'])} kept, wall {r['wall']:.2f}s, "
              f"generation {r['generate'] / n:.3f} s/image, filter {r['filter'] / n:.3f} s/image, "
              f"overhead {over:.3f} s/image")
    _, kept_r, kept_over = lines[1]
    gen_per_image = kept_r["generate"] / kept_r["images"]
    return kept_over / gen_per_image, f"overhead_s={kept_over:.3f}"
