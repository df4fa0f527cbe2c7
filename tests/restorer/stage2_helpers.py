"""Tiny models and data for the Stage II tests (MapNet, one-step SD-Turbo, training, restore).

Everything goes through the real loading code: the tiny SD-Turbo set is saved in the
``stabilityai/sd-turbo`` layout and loaded with ``from_pretrained``; the tiny FaDeX with its own
``save_pretrained``/``from_pretrained``; the training scenes are WebDataset shards in the layout
``inscene degrade`` writes. Built once per test process (they are read-only afterwards).
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

TOKEN_DIM = 32  # the tiny UNet's cross-attention width = MapNet token width


def one_thread():
    """Generator for a fixture: torch on one thread while a module runs (then restored).

    On the shared 2-core machines the tests run on, torch's two OpenMP threads spin against other
    processes and tiny models run tens of times slower than on one thread.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@cache
def _root() -> Path:
    import atexit
    import shutil

    root = Path(tempfile.mkdtemp(prefix="inscene-stage2-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@cache
def tiny_sd() -> Path:
    """A tiny random SD-Turbo-like model folder (built once per process)."""
    from restorer.sdturbo import write_tiny_sdturbo

    return write_tiny_sdturbo(_root() / "sd-turbo-tiny", cross_attention_dim=TOKEN_DIM)


@cache
def tiny_fadex() -> Path:
    """A tiny random FaDeX checkpoint folder (Z_face 16 channels, total stride 2)."""
    import torch

    from restorer.fadex import FaDeX, FadexConfig

    torch.manual_seed(0)
    model = FaDeX(FadexConfig(widths=(8, 16), strides=(1, 2), proj_hidden=16, proj_dim=8))
    folder = _root() / "fadex-tiny"
    model.save_pretrained(folder)
    return folder


@cache
def tiny_fadex_stride4() -> Path:
    """A tiny random FaDeX of total stride 4 (like the CPU recipe's): usable faces start at 32 px."""
    import torch

    from restorer.fadex import FaDeX, FadexConfig

    torch.manual_seed(0)
    model = FaDeX(FadexConfig(widths=(8, 16), strides=(2, 2), proj_hidden=16, proj_dim=8))
    folder = _root() / "fadex-tiny-s4"
    model.save_pretrained(folder)
    return folder


@cache
def untrained_checkpoint(fadex: Path) -> Path:
    """A restorer checkpoint of the tiny SD-Turbo with fresh LoRA/MapNet and the FaDeX at ``fadex``."""
    from restorer.model import save_checkpoint
    from restorer.train_restorer import build_trainer_model

    model = build_trainer_model(train_config(fadex=str(fadex)))
    return save_checkpoint(model, _root() / f"untrained-{fadex.name}.safetensors")


# A stand-in for FaceMe's infer.py with the same command line: it checks the arguments and writes
# each input, inverted, under the same name (FaceMe's model is replaced at this one boundary).
FAKE_FACEME_INFER = textwrap.dedent(
    """
    import argparse, os, cv2
    p = argparse.ArgumentParser()
    for a in ("--pretrained_model_name_or_path", "--controlnet_model_name_or_path", "--mix_path",
              "--input_dir", "--result_dir", "--ref_dir"):
        p.add_argument(a)
    p.add_argument("--seed", type=int)
    p.add_argument("--color_correction", action="store_true")
    a = p.parse_args()
    assert os.path.isdir("models/antelopev2"), "cwd must be the checkout"
    refs = os.listdir(a.ref_dir)
    assert refs, "no references"
    os.makedirs(a.result_dir, exist_ok=True)
    for f in os.listdir(a.input_dir):
        img = cv2.imread(os.path.join(a.input_dir, f))
        cv2.imwrite(os.path.join(a.result_dir, f), 255 - img)
    """
)


def faceme_checkout(parent: Path, script: str = FAKE_FACEME_INFER) -> Path:
    """A FaceMe checkout under ``parent/FaceMe`` with every required file and a stand-in ``infer.py``."""
    root = parent / "FaceMe"
    for d in ("weights/controlnet", "weights/mix", "models/antelopev2"):
        (root / d).mkdir(parents=True)
    (root / "weights/controlnet/config.json").write_text("{}")
    (root / "infer.py").write_text(script)
    return root


def scaled_face(face: Any, k: float) -> Any:
    """``face`` (box and landmarks) in an image scaled by ``k``."""
    return face.model_copy(update={"box": [v * k for v in face.box],
                                   "landmarks": (np.asarray(face.landmarks) * k).tolist()})


@cache
def astronaut(size: int = 256) -> np.ndarray:
    """scikit-image's astronaut (a real photo with one face), resized to ``size``."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def degrade(img: np.ndarray, sigma: float, noise: float, seed: int) -> np.ndarray:
    """A simple blur + noise degradation (the tests need an LQ, not Real-ESRGAN)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = cv2.GaussianBlur(img, (0, 0), sigma).astype(np.float32)
    out += rng.normal(0, noise, out.shape)
    return np.clip(out, 0, 255).round().astype(np.uint8)


@cache
def astronaut_face() -> Any:
    """The astronaut's face as the dlib detector finds it on the clean image."""
    from inscene.faces import create_detector

    return create_detector("dlib").detect(astronaut())[0]


@cache
def scene_dataset() -> Path:
    """Training shards as ``inscene degrade`` writes them: ``train/synthetic-00000.tar`` with
    ``hq.png``, ``lq0.png``, ``lq1.png`` and metadata with faces; one scene (coffee) has no face."""
    import cv2
    from skimage import data

    from inscene import imageio
    from inscene.shards import ShardWriter, write_index

    root = _root() / "scenes"
    face = astronaut_face()
    coffee = cv2.resize(data.coffee(), (256, 192), interpolation=cv2.INTER_AREA)
    with ShardWriter(root, "train", "synthetic") as w:
        for key, hq, faces in (("astro", astronaut(), [face]), ("coffee", coffee, [])):
            members = {"hq.png": imageio.encode_image(hq, "png")}
            for k, (sigma, noise) in enumerate(((1.5, 4.0), (0.8, 10.0))):
                members[f"lq{k}.png"] = imageio.encode_image(degrade(hq, sigma, noise, k), "png")
            meta = {"identity_id": "id0001" if faces else "",
                    "faces": json.dumps([f.model_dump(mode="json") for f in faces])}
            w.write(key, members, meta)
    write_index(root)
    return root


def train_config(**overrides: Any) -> Any:
    """A training configuration of the tiny models (random-init LPIPS and DINO)."""
    from restorer.train_restorer import RestorerTrainConfig

    base = dict(
        base=str(tiny_sd()), fadex=str(tiny_fadex()), mapnet_channels=32, mapnet_heads=8, vae_lora_rank=4,
        unet_lora_rank=4, iterations=2, batch_size=2, crop=64, lr=1e-3, warmup=0, save_every=1, log_every=1,
        loader_workers=0, pretrained_losses=False,
        dino_overrides={"embed_dim": 32, "depth": 4, "num_heads": 2, "img_size": 32},
    )
    base.update(overrides)
    return RestorerTrainConfig(**base)


@cache
def trained_run() -> Path:
    """A restorer run folder trained for 2 steps on :func:`scene_dataset` (all three losses)."""
    from restorer.train_restorer import run_training

    out = _root() / "restorer-run"
    run_training([scene_dataset()], out, train_config(), cpu=True, resume=False)
    return out


@cache
def eval_dataset() -> Path:
    """A validation split as ``inscene degrade`` writes it: ``val/synthetic-00000.tar`` with ``hq.png``,
    ``lq0.png`` and faces metadata (two scenes: the astronaut and a face-less one)."""
    import cv2
    from skimage import data

    from inscene import imageio
    from inscene.shards import ShardWriter, write_index

    root = _root() / "val-data"
    face = astronaut_face()
    coffee = cv2.resize(data.coffee(), (128, 96), interpolation=cv2.INTER_AREA)
    with ShardWriter(root, "val", "synthetic") as w:
        for key, hq, faces in (("astro", astronaut(), [face]), ("coffee", coffee, [])):
            members = {"hq.png": imageio.encode_image(hq, "png"),
                       "lq0.png": imageio.encode_image(degrade(hq, 1.2, 5.0, 7), "png")}
            primary = faces[0] if faces else None
            meta = {"identity_id": "id0001" if faces else "",
                    "faces": json.dumps([f.model_dump(mode="json") for f in faces]),
                    "face_box": json.dumps(primary.box) if primary else "",
                    "face_landmarks": json.dumps(primary.landmarks) if primary else "",
                    "width": int(hq.shape[1]), "height": int(hq.shape[0])}
            w.write(key, members, meta)
    write_index(root)
    return root


@cache
def face_scenes(n: int = 4) -> Path:
    """``n`` training scenes that all have a usable face (differently degraded astronauts)."""
    from inscene import imageio
    from inscene.shards import ShardWriter, write_index

    root = _root() / f"face-scenes-{n}"
    face = astronaut_face()
    with ShardWriter(root, "train", "synthetic") as w:
        for i in range(n):
            hq = astronaut()
            members = {"hq.png": imageio.encode_image(hq, "png")}
            for k in range(2):
                lq = degrade(hq, 0.8 + 0.3 * i + k, 3.0 + 2 * k, 10 * i + k)
                members[f"lq{k}.png"] = imageio.encode_image(lq, "png")
            w.write(f"astro{i}", members, {"identity_id": "id0001",
                                           "faces": json.dumps([face.model_dump(mode="json")])})
    write_index(root)
    return root
