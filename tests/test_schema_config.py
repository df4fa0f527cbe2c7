"""Records and typed settings."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from inscene.config import InsceneConfig
from inscene.schema import (
    SCHEMA_VERSION,
    Decision,
    DegradationParams,
    Face,
    Provenance,
    Sample,
    is_valid_key,
    json_schema,
)

SHA = "0" * 64


def _face(x1=10.0, y1=20.0, x2=110.0, y2=140.0):
    pts = [[40, 60], [80, 60], [60, 90], [45, 115], [75, 115]]
    return Face(box=[x1, y1, x2, y2], landmarks=pts, score=0.9, backend="dlib-hog")


def test_sample_meta_round_trip_keeps_every_field():
    s = Sample(
        key="abc_01",
        split="train",
        subset="synthetic",
        width=1024,
        height=768,
        identity_id="id-7",
        faces=[_face(), _face(0, 0, 300, 300)],
        prompt="A person in a park.",
        degradation=DegradationParams(pipeline="realesrgan", seed=3, params={"jpeg": [70, 80]}),
        provenance=Provenance(source="a.jpg", sha256=SHA, backends={"detector": "dlib-hog"}, seed=5),
    )
    meta = s.to_meta()
    assert all(v is not None for v in meta.values())
    # primary face = the largest one
    assert json.loads(meta["face_box"]) == [0, 0, 300, 300]
    assert meta["n_faces"] == 2
    back = Sample.from_meta(json.loads(json.dumps(meta)))
    assert back == s


def test_sample_meta_types_stable_when_fields_missing():
    bare = Sample(key="k", split="val", subset="real", width=8, height=8,
                  provenance=Provenance(source="x", sha256=SHA))
    full_meta = Sample(key="k2", split="val", subset="real", width=8, height=8, identity_id="p",
                       faces=[_face()], provenance=Provenance(source="x", sha256=SHA, seed=1)).to_meta()
    bare_meta = bare.to_meta()
    assert bare_meta.keys() == full_meta.keys()
    assert {k: type(v) for k, v in bare_meta.items()} == {k: type(v) for k, v in full_meta.items()}
    assert Sample.from_meta(bare_meta) == bare


@pytest.mark.parametrize(
    "kwargs",
    [
        {"box": [10, 10, 5, 20]},  # x2 < x1
        {"landmarks": [[1, 2]] * 4},  # 4 points
        {"landmarks": [[1, 2, 3]] * 5},  # not xy
        {"landmarks68": [[1, 2]] * 5},  # wrong count
    ],
)
def test_face_rejects_malformed_geometry(kwargs):
    base = {"box": [0, 0, 10, 10], "landmarks": [[1, 1]] * 5, "score": 1.0, "backend": "x"}
    base.update(kwargs)
    with pytest.raises(ValidationError):
        Face(**base)


def test_rejected_decision_needs_reason_and_keys_have_no_dots():
    with pytest.raises(ValidationError):
        Decision(item="a", stage="size", accepted=False)
    assert Decision(item="a", stage="size", accepted=False, reason="too small").reason == "too small"
    assert is_valid_key("img_001-a") and not is_valid_key("img.001") and not is_valid_key("a/b")
    with pytest.raises(ValidationError):
        Sample(key="has.dot", split="t", subset="s", width=1, height=1,
               provenance=Provenance(source="x", sha256=SHA))
    with pytest.raises(ValidationError):
        Provenance(source="x", sha256="not-a-hash")


def test_json_schema_lists_all_records_with_version():
    schema = json_schema()
    assert schema["schema_version"] == SCHEMA_VERSION
    assert set(schema["records"]) == {"Sample", "Face", "Identity", "Decision", "DegradationParams", "Provenance"}
    assert "box" in schema["records"]["Face"]["properties"]


def test_config_defaults_are_the_papers_values_and_flat_round_trips():
    cfg = InsceneConfig()
    assert cfg.real_filter.min_short_side_gallery == 1000  # §6.2
    assert cfg.real_filter.min_short_side_cc12m == 1024  # §4.1
    assert cfg.real_filter.min_face_area_fraction == 0.01  # §6.2
    assert (cfg.real_filter.min_musiq, cfg.real_filter.min_clipiqa, cfg.real_filter.min_maniqa) == (65.0, 0.65, 0.40)
    assert cfg.synthetic.min_identity_similarity == 0.55  # §6.1
    assert (cfg.restorer.vae_lora_rank, cfg.restorer.unet_lora_rank) == (16, 32)  # §9.2
    assert cfg.restorer.cfg_scale == 1.10 and cfg.restorer.num_tokens == 21
    flat = cfg.flat()
    assert flat["real_filter.min_musiq"] == 65.0
    json.dumps(flat)  # recordable as JSON
    changed = dict(flat, **{"real_filter.min_musiq": 60.0})
    assert InsceneConfig.from_flat(changed).real_filter.min_musiq == 60.0
    with pytest.raises(ValidationError):
        InsceneConfig.from_flat({"real_filter.no_such_field": 1})
    # every setting documents itself (the paper's section or "paper silent")
    for _, group in cfg:
        for name, f in type(group).model_fields.items():
            assert f.description, name
