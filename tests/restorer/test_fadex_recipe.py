"""The CPU recipe's building blocks (the full run is `python -m restorer.recipes.fadex_cpu`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inscene.degradations import apply, load_params
from inscene.shards import ShardReader
from restorer.recipes.fadex_cpu import build_images, generated_image, write_degraded


def test_generated_images_are_deterministic_and_varied():
    a = generated_image(np.random.default_rng(3), 96)
    b = generated_image(np.random.default_rng(3), 96)
    c = generated_image(np.random.default_rng(4), 96)
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.std() > 10


def test_write_degraded_has_the_degrade_layout_at_scale_1(tmp_path):
    from inscene.imageio import encode_image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        (imgs / f"g{i}.png").write_bytes(encode_image(generated_image(rng, 48), "png"))
    assert write_degraded(imgs, tmp_path / "deg", versions=2, seed=7) == 2
    samples = list(ShardReader(tmp_path / "deg"))
    assert [s.key for s in samples] == ["g0", "g1"]
    for s in samples:
        for k in range(2):
            p = load_params(s.members[f"lq{k}.json"])
            assert p.scale == 1 and p.pipeline.endswith("-x1")
            assert np.array_equal(apply(s.images["hq.png"], p), s.images[f"lq{k}.png"])  # replayable
    assert json.loads(samples[0].members["lq0.json"]) != json.loads(samples[1].members["lq0.json"])


@pytest.mark.slow
def test_build_images_holds_out_ten(tmp_path):
    counts = build_images(tmp_path, generated=2, scene_crops=1)
    assert counts["heldout"] == 10
    train = {p.stem for p in (tmp_path / "train").glob("*.png")}
    held = {p.stem for p in (tmp_path / "heldout").glob("*.png")}
    assert len(train) == counts["train"] and not (train & held)
    assert any(n.startswith("face-") for n in train) and any(n.startswith("face-") for n in held)
