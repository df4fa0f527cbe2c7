"""Real sample photos that installed packages ship, and detectors shared across the face tests."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

T1_FACES = 6  # insightface's sample group photo shows six people


def t1_path() -> Path:
    root = Path(next(iter(importlib.util.find_spec("insightface").submodule_search_locations)))
    return root / "data" / "images" / "t1.jpg"


@pytest.fixture(scope="session")
def t1() -> np.ndarray:
    from inscene.imageio import decode_image

    return decode_image(t1_path())


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def dlib_detector():
    from inscene.faces import create_detector

    det = create_detector("dlib")
    det.load()
    return det


@pytest.fixture(scope="session")
def t1_faces(t1, dlib_detector):
    return dlib_detector.detect(t1)


@pytest.fixture(scope="session")
def astronaut_faces(astronaut, dlib_detector):
    return dlib_detector.detect(astronaut)


# A YOLOv8-style detector with 0.35 M parameters (width 1/16 of YOLOv8), one class.
TINY_YOLO = """
nc: 1
depth_multiple: 0.33
width_multiple: 0.0625
backbone:
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, 1, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [-1, 1, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]]
  - [-1, 1, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]]
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, C2f, [512]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 1, C2f, [256]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 12], 1, Concat, [1]]
  - [-1, 1, C2f, [512]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 9], 1, Concat, [1]]
  - [-1, 1, C2f, [1024]]
  - [[15, 18, 21], 1, Detect, [nc]]
"""


@pytest.fixture(scope="session")
def tiny_yolo_pt(tmp_path_factory):
    """A 0.35 M-parameter YOLOv8-style face model with random weights, saved as a real .pt."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("yolo")
    cfg = folder / "tiny-face.yaml"
    cfg.write_text(TINY_YOLO)
    model = YOLO(str(cfg), task="detect")
    model.model.names = {0: "face"}
    pt = folder / "tiny-face.pt"
    model.save(str(pt))
    return pt
