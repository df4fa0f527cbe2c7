"""Tiny degraded datasets for the restorer tests (made with the real `inscene degrade` code path)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console


def write_clean_images(folder: Path, n_generated: int = 3, seed: int = 0) -> Path:
    """A face image (the astronaut's head and shoulders) and ``n_generated`` procedural scenes."""
    import cv2
    from skimage import data

    from inscene.imageio import encode_image
    from restorer.recipes.fadex_cpu import generated_image

    folder.mkdir(parents=True, exist_ok=True)
    face = cv2.resize(data.astronaut()[40:260, 120:340], (160, 160), interpolation=cv2.INTER_AREA)
    (folder / "face-astronaut.png").write_bytes(encode_image(face, "png"))
    rng = np.random.default_rng(seed)
    for i in range(n_generated):
        (folder / f"gen-{i}.png").write_bytes(encode_image(generated_image(rng, 64), "png"))
    return folder


@pytest.fixture(scope="session")
def degraded_dataset(tmp_path_factory) -> Path:
    """``inscene degrade --versions 2`` output of 4 clean images (train/fadex)."""
    from pipelines.degrade import DegradeOptions, run_degrade

    root = tmp_path_factory.mktemp("fadex-data")
    clean = write_clean_images(root / "clean")
    out = root / "degraded"
    run_degrade(clean, out, DegradeOptions(versions=2, seed=1), split="train", subset="fadex",
                console=Console(file=io.StringIO()))
    return out


@pytest.fixture(scope="session")
def pair_dataset(degraded_dataset, tmp_path_factory) -> Path:
    """``inscene restorer prepare-pairs --ref-fr gt --share 1 --no-face center`` of that dataset."""
    from restorer.pairs import PairOptions, run_prepare_pairs

    out = tmp_path_factory.mktemp("fadex-pairs") / "pairs"
    run_prepare_pairs(degraded_dataset, out, PairOptions(share=1, no_face="center", threads=1),
                      partition_size=2, console=Console(file=io.StringIO()))
    return out
