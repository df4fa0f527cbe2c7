"""Ref-FR backends (registry; FaceMe adapter through a stand-in ``infer.py`` at the subprocess boundary)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from inscene.errors import BadInputError, InsceneError, MissingWeightsError
from restorer.reffr import FaceMeRefFR, RefFRBatch, create_ref_fr, list_ref_fr
from tests.restorer.stage2_helpers import faceme_checkout as _checkout


def _crop(v: int, size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), v, np.uint8)


def test_registry():
    assert list_ref_fr() == ["faceme", "gt", "passthrough"]
    with pytest.raises(BadInputError, match="unknown Ref-FR backend 'x'"):
        create_ref_fr("x")
    with pytest.raises(BadInputError, match="Ref-FR 'gt'"):
        create_ref_fr("gt", nonsense=1)
    for name in list_ref_fr():
        meta = create_ref_fr(name).describe()
        assert meta["name"] == name and set(meta) >= {"needs_references", "uses_gpu", "band_limited"}


def test_gt_and_passthrough():
    batch = RefFRBatch(lq=[_crop(10), _crop(20)], ground_truth=[_crop(200), _crop(210)])
    assert [int(c[0, 0, 0]) for c in create_ref_fr("gt").restore(batch)] == [200, 210]
    assert [int(c[0, 0, 0]) for c in create_ref_fr("passthrough").restore(batch)] == [10, 20]
    with pytest.raises(BadInputError, match="ground-truth"):
        create_ref_fr("gt").restore(RefFRBatch(lq=[_crop(1)]))
    with pytest.raises(BadInputError, match="square"):
        RefFRBatch(lq=[np.zeros((10, 12, 3), np.uint8)])
    with pytest.raises(BadInputError, match="reference lists"):
        RefFRBatch(lq=[_crop(1)], references=[[], []])


def test_faceme_without_checkout_is_a_one_line_missing_weights_error(monkeypatch, tmp_path):
    monkeypatch.setenv("INSCENE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("INSCENE_WEIGHTS_FACEME", raising=False)
    fr = create_ref_fr("faceme")
    with pytest.raises(MissingWeightsError) as info:
        fr.load()
    assert "\n" not in str(info.value) and "faceme" in str(info.value)
    incomplete = tmp_path / "FaceMe"
    (incomplete / "weights").mkdir(parents=True)
    (incomplete / "infer.py").write_text("")
    with pytest.raises(MissingWeightsError, match="weights/controlnet/config.json"):
        create_ref_fr("faceme", path=incomplete).load()


def test_faceme_adapter_runs_infer_py_per_identity(tmp_path):
    fr = FaceMeRefFR(_checkout(tmp_path), python=sys.executable)
    lq = [_crop(10, 32), _crop(20, 32), _crop(30, 32)]
    refs = [[_crop(100, 32)], [_crop(100, 32)], [_crop(150, 32)]]
    out = fr.restore(RefFRBatch(lq=lq, references=refs, identities=["a", "a", "b"]))
    assert [int(o[0, 0, 0]) for o in out] == [245, 235, 225]
    cmd = fr.command(tmp_path / "i", tmp_path / "r", tmp_path / "o")
    assert cmd[1].endswith("infer.py") and "--color_correction" in cmd and "SG161222/RealVisXL_V3.0" in cmd
    with pytest.raises(BadInputError, match="needs identity references"):
        fr.restore(RefFRBatch(lq=lq[:1]))


def test_faceme_failure_is_reported(tmp_path):
    fr = FaceMeRefFR(_checkout(tmp_path, "raise SystemExit('CUDA not available')"), python=sys.executable)
    with pytest.raises(InsceneError, match="FaceMe infer.py failed"):
        fr.restore(RefFRBatch(lq=[_crop(1, 32)], references=[[_crop(2, 32)]]))


def test_faceme_relative_checkout_path_runs_infer_py(tmp_path, monkeypatch):
    # `--ref-fr-path FaceMe` from the folder holding the checkout: infer.py runs with the checkout as
    # working directory, so the path must not be applied a second time (FaceMe/FaceMe/infer.py).
    root = _checkout(tmp_path)
    monkeypatch.chdir(tmp_path)
    fr = create_ref_fr("faceme", path="FaceMe", python=sys.executable)
    assert fr.load() == root.resolve()
    out = fr.restore(RefFRBatch(lq=[_crop(10, 32)], references=[[_crop(100, 32)]]))
    assert int(out[0][0, 0, 0]) == 245
