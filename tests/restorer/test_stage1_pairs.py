"""``prepare-pairs``: Stage I pairs of a degraded dataset, labelled by their operator (§3.1, §3.2)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from inscene.degradations import apply, load_params
from inscene.errors import BadInputError
from inscene.shards import ShardReader
from restorer.pairs import PairOptions, degradation_label, run_prepare_pairs


def _pairs(root):
    return {s.key: s for s in ShardReader(root, decode_images=True)}


def test_pairs_share_a_label_exactly_when_made_with_the_same_operator(pair_dataset, degraded_dataset):
    pairs = _pairs(pair_dataset)
    # 4 clean images x 2 operators x (own + 1 shared)
    assert len(pairs) == 16
    by_label: dict[str, set[str]] = {}
    for s in pairs.values():
        params = load_params(s.members["params.json"])
        assert s.meta["label"] == degradation_label(params)
        by_label.setdefault(s.meta["label"], set()).add(s.members["params.json"].decode())
        hq, lq, gt = s.images["hq.png"], s.images["lq.png"], s.images["gt.png"]
        assert hq.shape == lq.shape == gt.shape and min(hq.shape[:2]) >= 16
        assert s.meta["width"] == hq.shape[1] and s.meta["height"] == hq.shape[0]
    assert len(by_label) == 8 and all(len(v) == 1 for v in by_label.values())
    own = [s for s in pairs.values() if s.meta["kind"] == "own"]
    shared = [s for s in pairs.values() if s.meta["kind"] == "shared"]
    assert len(own) == len(shared) == 8
    for s in shared:  # a shared pair is the same G replayed on another clean image
        assert s.meta["scene_key"] != s.meta["operator_key"]
        partner = next(o for o in own if o.meta["label"] == s.meta["label"])
        assert partner.meta["scene_key"] == s.meta["operator_key"]


def test_face_image_gives_a_stage1_face_pair_and_scenes_their_centre(pair_dataset):
    pairs = _pairs(pair_dataset)
    face = [s for s in pairs.values() if s.meta["scene_key"] == "face-astronaut"]
    assert face and all(s.meta["face_source"] in ("lq", "hq") for s in face)
    assert all(json.loads(s.meta["matrix"]) for s in face)
    scenes = [s for s in pairs.values() if s.meta["scene_key"].startswith("gen-")]
    assert scenes and all(s.meta["face_source"] == "center" for s in scenes)
    for s in scenes:  # gt backend: x_HQ is the clean crop, x_LQ the degraded one
        assert np.array_equal(s.images["hq.png"], s.images["gt.png"])


def test_shared_pair_lq_is_the_replayed_operator(pair_dataset, degraded_dataset):
    clean = {s.key: s.images["hq.png"] for s in ShardReader(degraded_dataset)}
    for s in _pairs(pair_dataset).values():
        if s.meta["kind"] != "shared" or s.meta["face_source"] != "center":
            continue
        params = load_params(s.members["params.json"])
        x0, y0, x1, y1 = json.loads(s.meta["box"])
        expect = apply(clean[s.meta["scene_key"]], params)[y0:y1, x0:x1]
        assert np.array_equal(s.images["lq.png"], expect)


def test_rerun_resumes_and_other_options_are_refused(pair_dataset, degraded_dataset):
    quiet = Console(file=io.StringIO())
    again = run_prepare_pairs(degraded_dataset, pair_dataset, PairOptions(share=1, no_face="center", threads=1),
                              partition_size=2, console=quiet)
    s = next(iter(again.summaries.values()))
    assert s.skipped_partitions == s.partitions == 2 and again.pairs == 16
    with pytest.raises(BadInputError, match="other options"):
        run_prepare_pairs(degraded_dataset, pair_dataset, PairOptions(share=2, no_face="center"),
                          partition_size=2, console=quiet)


def test_skip_mode_rejects_faceless_images(degraded_dataset, tmp_path):
    res = run_prepare_pairs(degraded_dataset, tmp_path / "p", PairOptions(share=0, threads=1),
                            console=Console(file=io.StringIO()))
    s = next(iter(res.summaries.values()))
    assert s.accepted == 1 and s.rejected == 3 and res.pairs == 2
    assert all("no face" in r for r in s.by_reason)


def test_bad_options(degraded_dataset, tmp_path):
    quiet = Console(file=io.StringIO())
    with pytest.raises(BadInputError, match="needs identity references"):
        run_prepare_pairs(degraded_dataset, tmp_path / "a", PairOptions(ref_fr="faceme"), console=quiet)
    with pytest.raises(BadInputError, match="--no-face center needs"):
        PairOptions(ref_fr="faceme", no_face="center", refs=tmp_path).check()
    with pytest.raises(BadInputError, match="--landmarks"):
        PairOptions(landmarks="nose").check()
    with pytest.raises(BadInputError, match="inscene degrade"):
        run_prepare_pairs(tmp_path, tmp_path / "b", PairOptions(), console=quiet)
