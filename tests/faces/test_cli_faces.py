"""``inscene faces detect`` and ``inscene faces compare``, offline on the sample photos."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from inscene.cli import app
from inscene.errors import BadInputError
from inscene.imageio import decode_image, encode_image

from .conftest import T1_FACES, t1_path

runner = CliRunner()


def _write(path, rgb):
    path.write_bytes(encode_image(rgb, "png"))
    return path


def test_detect_json_and_draw(tmp_path):
    out = tmp_path / "drawn.png"
    res = runner.invoke(app, ["faces", "detect", str(t1_path()), "--json", "--draw", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert len(data) == 1 and data[0]["width"] == 1280 and data[0]["height"] == 886
    faces = data[0]["faces"]
    assert len(faces) == T1_FACES
    assert all(len(f["box"]) == 4 and len(f["landmarks"]) == 5 and "score" in f for f in faces)
    assert data[0]["detector"] == "dlib-hog+dlib-shape68"
    drawn = decode_image(out)
    assert drawn.shape == (886, 1280, 3)
    original = decode_image(t1_path())
    changed = np.any(drawn != original, axis=2)
    x1, y1, x2, y2 = (round(v) for v in faces[0]["box"])
    assert changed[y1, x1 : x2 + 1].mean() > 0.8  # the box's top edge is drawn
    assert changed.mean() < 0.05  # and little else


def test_detect_table_several_images_and_largest(tmp_path, astronaut):
    # A long folder name: the per-image header must keep the path whole on an 80-column console
    # (CI's deep temporary paths once wrapped it inside a table title and split "t1.jpg").
    deep = tmp_path / ("a-long-folder-name-" * 4)
    deep.mkdir()
    a = _write(deep / "astro.png", astronaut)
    res = runner.invoke(
        app, ["faces", "detect", str(a), str(t1_path()), "--select", "largest", "--draw", str(tmp_path / "d.png")]
    )
    assert res.exit_code == 0, res.output
    assert f"{a} (512x512): 1 face(s)" in res.stdout
    assert f"{t1_path()} (1280x886): 1 face(s)" in res.stdout
    assert (tmp_path / "d-astro.png").is_file() and (tmp_path / "d-t1.png").is_file()


def test_compare_same_and_different(tmp_path, astronaut, t1, t1_faces):
    a = _write(tmp_path / "a.png", astronaut)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(astronaut[:, ::-1, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 50])
    b = tmp_path / "a-flipped.jpg"
    b.write_bytes(buf.tobytes())
    res = runner.invoke(app, ["faces", "compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "same person" in res.stdout and "threshold 0.92" in res.stdout

    crops = []
    for i in (0, 1):
        x1, y1, x2, y2 = (int(v) for v in t1_faces[i].box)
        crops.append(
            _write(
                tmp_path / f"p{i}.png", np.ascontiguousarray(t1[max(0, y1 - 60) : y2 + 60, max(0, x1 - 60) : x2 + 60])
            )
        )
    res = runner.invoke(app, ["faces", "compare", str(crops[0]), str(crops[1]), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["same_identity"] is False and data["similarity"] < data["threshold"] == 0.92
    assert data["embedder"] == "dlib-resnet" and data["metric"] == "cosine"


def test_compare_without_a_face_is_bad_input(tmp_path, astronaut):
    blank = _write(tmp_path / "blank.png", np.zeros((200, 200, 3), np.uint8))
    a = _write(tmp_path / "a.png", astronaut)
    res = runner.invoke(app, ["faces", "compare", str(a), str(blank)])
    assert isinstance(res.exception, BadInputError) and "no face found" in str(res.exception)


def test_help_lists_faces_commands():
    res = runner.invoke(app, ["faces", "--help"])
    assert res.exit_code == 0 and "detect" in res.stdout and "compare" in res.stdout


@pytest.mark.parametrize("args", [["faces", "detect", "/no/such/file.png"], ["faces", "detect", "--select", "x", "y"]])
def test_detect_bad_arguments(args):
    res = runner.invoke(app, args)
    assert res.exit_code != 0


def test_detect_backend_options_reach_the_detector_and_misplaced_ones_are_refused(tmp_path, astronaut):
    a = _write(tmp_path / "astro.png", astronaut)
    res = runner.invoke(app, ["faces", "detect", str(a), "--dlib-model", "mmod", "--json"])
    assert res.exit_code == 0, res.output
    (entry,) = json.loads(res.stdout)
    assert "mmod" in entry["detector"] and len(entry["faces"]) == 1
    bad = runner.invoke(app, ["faces", "detect", str(a), "--pack", "buffalo_l"])
    assert isinstance(bad.exception, BadInputError) and "--pack does not apply to --detector dlib" in str(bad.exception)
    missing = runner.invoke(app, ["faces", "detect", str(a), "--detector", "insightface", "--weights",
                                  str(tmp_path / "no-pack")])
    assert missing.exception is not None and "no-pack" in str(missing.exception)
    assert "1024" in runner.invoke(app, ["faces", "detect", "--help"]).output  # --max-side default shown
