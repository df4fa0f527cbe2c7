"""The paper's backends: insightface (SCRFD + ArcFace) and YOLO-face adapters; missing weights.

insightface ships its models only as ONNX packs that cannot be built small, so its adapter's
conversions are tested with the insightface ``FaceAnalysis`` object replaced at the one place it
is constructed (``detectors._build_insightface_app``); everything around it (finding the pack
folder through ``inscene.weights``, providers, BGR conversion, downscaling and mapping back,
selection, normalising embeddings) is the real code. YOLO-face runs through its real loading
path: a tiny ultralytics model built from a yaml, saved as ``.pt`` and loaded with ``YOLO(path)``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from inscene.errors import MissingWeightsError
from inscene.faces import create_detector, create_embedder
from inscene.faces import detectors as D

from .conftest import t1_path
from .fakes import FakeFaceAnalysis, iface

# ---- insightface, with FaceAnalysis replaced -------------------------------------------------


@pytest.fixture
def pack(tmp_path):
    """An antelopev2 pack folder, nested the way the zip unpacks, with placeholder ONNX files."""
    root = tmp_path / "antelopev2"
    inner = root / "antelopev2"
    inner.mkdir(parents=True)
    for name in ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "genderage.onnx"):
        (inner / name).write_bytes(b"placeholder")
    return root


@pytest.fixture
def fake_app(monkeypatch):
    calls = {}
    kps_a = [[120, 90], [160, 90], [140, 110], [125, 130], [155, 130]]
    fake = FakeFaceAnalysis(
        [
            iface([100, 50, 180, 150], kps_a, 0.80),  # larger, lower score
            iface([300, 300, 340, 350], [[310, 315], [330, 315], [320, 325], [312, 335], [328, 335]], 0.95),
        ]
    )

    def build(pack_dir, providers, ctx_id, det_size, det_thresh):
        calls.update(pack_dir=pack_dir, providers=providers, ctx_id=ctx_id, det_size=det_size, det_thresh=det_thresh)
        return fake

    monkeypatch.setattr(D, "_build_insightface_app", build)
    return fake, calls


def test_insightface_detector_converts_and_maps_back(pack, fake_app):
    fake, calls = fake_app
    img = np.zeros((1024, 1024, 3), np.uint8)
    img[:, :512, 0] = 255  # left half red (RGB)
    det = create_detector("insightface", path=pack, max_side=512, providers=["CPUExecutionProvider"])
    faces = det.detect(img)

    assert calls["pack_dir"] == pack / "antelopev2"  # nested zip layout found
    assert calls["providers"] == ["CPUExecutionProvider"] and calls["ctx_id"] == -1
    assert calls["det_size"] == 640 and calls["det_thresh"] == 0.5
    seen = fake.seen[-1]
    assert seen.shape == (512, 512, 3)  # detection ran on the downscaled copy...
    assert seen[10, 10].tolist() == [0, 0, 255]  # ...in BGR order
    assert [f.score for f in faces] == pytest.approx([0.95, 0.80])
    a = faces[1]
    assert a.box == pytest.approx([200, 100, 360, 300])  # box edges x2
    kps_a = np.array([[120, 90], [160, 90], [140, 110], [125, 130], [155, 130]], float)
    np.testing.assert_allclose(a.landmarks, (kps_a + 0.5) * 2 - 0.5)  # pixel centres
    assert a.backend == "insightface-antelopev2" and a.landmarks68 is None
    largest = det.detect(img, select="largest")
    assert len(largest) == 1 and largest[0].box == pytest.approx([200, 100, 360, 300])
    assert [f.score for f in det.detect(img, min_size=100)] == pytest.approx([0.80])


def test_arcface_embedder_feeds_bgr_and_landmarks_and_normalises(pack, fake_app, astronaut):
    fake, _ = fake_app
    from inscene.schema import Face

    emb = create_embedder("arcface", path=pack, providers=["CPUExecutionProvider"])
    face = Face(
        box=[179, 87, 272, 179],
        landmarks=[[203, 101], [247, 104], [225, 127], [205, 150], [245, 152]],
        score=1.0,
        backend="test",
    )
    v = emb.embed(astronaut, face)
    raw = np.arange(1, 513, dtype=np.float32)
    np.testing.assert_allclose(v, raw / np.linalg.norm(raw), rtol=1e-6)
    img, kps = fake.models["recognition"].calls[-1]
    assert np.array_equal(img, astronaut[:, :, ::-1])  # full resolution, BGR
    np.testing.assert_allclose(kps, face.landmarks)
    assert emb.backend == "arcface-antelopev2" and emb.same_identity(0.56) and not emb.same_identity(0.54)


def _isolated_env(monkeypatch, tmp_path):
    for var in ("INSCENE_HOME", "INSIGHTFACE_HOME", "HOME", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # it read the environment at import; a real cache may hold packs
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "INSCENE_WEIGHTS_ANTELOPEV2", "INSCENE_WEIGHTS_BUFFALO_L"):
        monkeypatch.delenv(var, raising=False)


def test_missing_pack_is_one_line_naming_folder_and_fetch_command(monkeypatch, tmp_path, astronaut):
    _isolated_env(monkeypatch, tmp_path)
    folder = tmp_path / "inscene_home" / "insightface" / "models" / "antelopev2"
    with pytest.raises(MissingWeightsError) as exc:
        create_detector("insightface").detect(astronaut)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(folder) in msg and "inscene weights fetch antelopev2" in msg
    with pytest.raises(MissingWeightsError, match="inscene weights fetch buffalo_l"):
        create_embedder("arcface", pack="buffalo_l").load()


def test_missing_pack_on_the_command_line(tmp_path):
    env = {**os.environ}
    for var in ("INSCENE_HOME", "INSIGHTFACE_HOME", "HOME", "HF_HOME", "XDG_CACHE_HOME"):
        env[var] = str(tmp_path / var.lower())
    proc = subprocess.run(
        [sys.executable, "-m", "inscene", "faces", "detect", str(t1_path()), "--detector", "insightface"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "antelopev2" in lines[0] and "inscene weights fetch antelopev2" in lines[0]
    assert str(tmp_path / "inscene_home" / "insightface" / "models" / "antelopev2") in lines[0]


# ---- YOLO-face through ultralytics' real loading path ----------------------------------------


def test_yolo_face_real_model_runs_end_to_end(tiny_yolo_pt, astronaut):
    """The random model's boxes mean nothing; what is checked is the loaded .pt running on the
    downscaled copy and every returned face being a valid record in the input's pixels."""
    big = cv2.resize(astronaut, (1024, 1024))
    det = create_detector("yolo-face", path=tiny_yolo_pt, conf=0.005, imgsz=320, max_side=512)
    faces = det.detect(big)
    assert det.backend == "yolo-face(tiny-face)+dlib-shape68"
    assert faces, "the random model gives low-confidence boxes; conf=0.005 keeps some"
    for f in faces:
        assert 0 <= f.box[0] < f.box[2] <= 1024 and 0 <= f.box[1] < f.box[3] <= 1024
        assert len(f.landmarks) == 5 and f.backend == det.backend


def test_yolo_face_maps_boxes_back_and_takes_landmarks_from_dlib(tiny_yolo_pt, astronaut, astronaut_faces, monkeypatch):
    """Only the loaded model's ``predict`` is replaced (a random model finds no real face): it
    returns ultralytics ``Results`` with the astronaut's face box in the downscaled copy, as a
    trained yolo-face would. Checked: the BGR copy it is given, boxes mapped back, landmarks
    from the dlib landmark backend inside the box, selection."""
    import torch
    from ultralytics.engine.results import Results

    scale = 2
    big = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    det = create_detector("yolo-face", path=tiny_yolo_pt, max_side=512)
    model = det._model()  # the real ultralytics YOLO loaded from the .pt
    true_box = np.array([172.0, 62.0, 272.0, 182.0])  # a yolo-face style box (forehead to chin)
    seen = {}

    def predict(source, **kw):
        seen["source"], seen["kw"] = source, kw
        boxes = torch.tensor([[*true_box, 0.9, 0.0], [20.0, 20.0, 40.0, 44.0, 0.6, 0.0]])
        return [Results(orig_img=source, path="x.jpg", names=model.names, boxes=boxes)]

    monkeypatch.setattr(model, "predict", predict)
    faces = det.detect(big)
    assert seen["source"].shape == (512, 512, 3)
    np.testing.assert_allclose(seen["source"][100, 100], astronaut[100, 100, ::-1], atol=2)  # BGR
    assert seen["kw"]["conf"] == 0.25 and seen["kw"]["imgsz"] == 1280
    assert len(faces) == 2 and faces[0].score == pytest.approx(0.9)
    assert faces[0].box == pytest.approx(list(true_box * scale), abs=1e-3)
    # landmarks: dlib's, on the full-resolution image, where the dlib detector puts them
    ref = (np.asarray(astronaut_faces[0].landmarks) + 0.5) * scale - 0.5
    assert np.abs(np.asarray(faces[0].landmarks) - ref).max() < 6
    assert faces[0].landmarks68 is not None
    assert det.detect(big, select="largest")[0].score == pytest.approx(0.9)
    assert len(det.detect(big, min_size=100)) == 1


def test_yolo_face_with_insightface_landmarks_offsets_crop_keypoints(tiny_yolo_pt, pack, monkeypatch):
    """Landmarks from the insightface backend: SCRFD (replaced, as above) runs on a crop around
    the YOLO box; its keypoints come back offset by the crop's origin; a box without a face in
    its crop is dropped."""
    import torch
    from ultralytics.engine.results import Results

    crop_face = iface([50, 50, 150, 150], [[80, 90], [120, 90], [100, 110], [85, 130], [115, 130]], 0.9)
    fake = FakeFaceAnalysis([crop_face])
    monkeypatch.setattr(D, "_build_insightface_app", lambda *a: fake)
    det = create_detector(
        "yolo-face",
        path=tiny_yolo_pt,
        landmarks="insightface",
        landmark_opts={"path": str(pack), "providers": ["CPUExecutionProvider"]},
        max_side=None,
    )
    model = det._model()
    boxes = torch.tensor([[300.0, 200.0, 400.0, 300.0, 0.9, 0.0]])
    monkeypatch.setattr(
        model, "predict", lambda source, **kw: [Results(orig_img=source, path="x", names=model.names, boxes=boxes)]
    )
    img = np.zeros((600, 800, 3), np.uint8)
    faces = det.detect(img)
    assert det.backend == "yolo-face(tiny-face)+insightface-antelopev2"
    crop = fake.seen[-1]
    assert crop.shape == (200, 200, 3)  # box 100 px + 50 px each side
    assert len(faces) == 1 and faces[0].box == pytest.approx([300, 200, 400, 300])
    np.testing.assert_allclose(faces[0].landmarks[0], [250 + 80, 150 + 90])
    fake.faces = []
    assert det.detect(img) == []
