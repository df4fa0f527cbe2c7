"""``compose``: an offline stand-in generator that pastes the reference face into a drawn scene.

Provenance: not the paper's method. Face2Scene §6.1 generates scenes with InfiniteYou on FLUX
(:mod:`.infiniteyou`), whose weights no offline machine has. This embedded generator lets the
rest of ``inscene build-synthetic`` (identity filter, Figure-5 records, shards, resume, diversity
report) run offline with real faces: the reference face, aligned with the faces module, is
scaled, slightly rotated and blended (feathered oval mask) onto a procedurally drawn full-body
figure in a procedural scene (sky/ground gradient, buildings or trees, texture noise), coloured
from a few words of the prompt. Deterministic in the seed. Every record names it ``compose``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from inscene.errors import BadInputError
from pipelines.generators import Generator

_COLORS = {
    "red": (178, 34, 44), "navy": (30, 40, 90), "white": (232, 232, 226), "grey": (128, 128, 132),
    "gray": (128, 128, 132), "black": (30, 30, 32), "yellow": (230, 190, 40), "green": (50, 120, 60),
    "brown": (110, 70, 40), "denim": (60, 90, 140), "beige": (200, 180, 140), "charcoal": (60, 62, 66),
    "camel": (190, 150, 100), "floral": (210, 120, 160), "striped": (70, 110, 170),
}
_SKIES = {
    "dusk": ((40, 50, 110), (230, 140, 100)), "golden": ((120, 150, 200), (250, 190, 120)),
    "overcast": ((170, 175, 182), (200, 200, 205)), "indoor": ((150, 120, 90), (200, 170, 130)),
    "lighting": ((150, 120, 90), (200, 170, 130)),
}
_DEFAULT_SKY = ((90, 140, 210), (200, 220, 240))
_CANONICAL = 512


def _pick(text: str, table: dict[str, Any], default: Any) -> Any:
    low = text.lower()
    hits = [(low.find(k), v) for k, v in table.items() if k in low]
    return min(hits, key=lambda h: h[0])[1] if hits else default


@dataclass
class ComposeGenerator(Generator):
    """Reference face composited onto a drawn figure in a drawn scene (offline, CPU).

    Args:
        width, height: output size.
        face_fraction: range of the face-box width as a fraction of the image width.
        max_rotation: largest in-plane rotation of the pasted face (degrees).
        detector: face detector for the reference (:func:`inscene.faces.create_detector` name).
    """

    name: ClassVar[str] = "compose"
    version: ClassVar[str] = "1"
    uses_gpu: ClassVar[bool] = False
    paper: ClassVar[bool] = False

    width: int = 512
    height: int = 640
    face_fraction: tuple[float, float] = (0.10, 0.16)
    max_rotation: float = 6.0
    detector: str = "dlib"

    def __post_init__(self) -> None:
        if self.width < 128 or self.height < 128:
            raise BadInputError(f"compose needs at least 128x128, got {self.width}x{self.height}")

    def _detector(self):
        from inscene.faces import create_detector

        return create_detector(self.detector, select="largest")

    def load(self) -> None:
        """Load the reference-face detector's models."""
        self._detector().load()

    def condition(self, reference_rgb: np.ndarray) -> np.ndarray | None:
        """The reference's largest face aligned to the canonical 512x512 frame, or None."""
        from inscene.faces.align import align_face

        faces = self._detector().detect(reference_rgb, select="largest")
        if not faces:
            return None
        crop, _ = align_face(np.asarray(reference_rgb), faces[0], size=_CANONICAL)
        return crop

    def generate(self, prompts: list[str], conditions: list[Any], seeds: list[int]) -> list[np.ndarray]:
        """One composite per (prompt, aligned face, seed)."""
        if not (len(prompts) == len(conditions) == len(seeds)) or not prompts:
            raise BadInputError("generate needs as many prompts, conditions and seeds, at least one")
        return [self._one(p, c, int(s)) for p, c, s in zip(prompts, conditions, seeds, strict=True)]

    def _scene(self, rng: np.random.Generator, prompt: str) -> np.ndarray:
        h, w = self.height, self.width
        top, horizon = _pick(prompt, _SKIES, _DEFAULT_SKY)
        y = np.linspace(0, 1, h)[:, None, None]
        img = (np.array(top) * (1 - y) + np.array(horizon) * y) * np.ones((1, w, 1))
        ground_y = int(h * rng.uniform(0.62, 0.72))
        ground = np.array(rng.integers(60, 160, 3))
        img[ground_y:] = ground * np.linspace(0.8, 1.1, h - ground_y)[:, None, None]
        for _ in range(int(rng.integers(4, 9))):  # buildings, trees
            x0 = int(rng.integers(0, w))
            bw = int(rng.integers(w // 12, w // 4))
            bh = int(rng.integers(h // 8, h // 2))
            color = tuple(int(c) for c in rng.integers(40, 220, 3))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x0, ground_y - bh), (x0 + bw, ground_y), color, -1)
            else:
                cv2.circle(img, (x0, ground_y - bh // 2), bw // 2, color, -1)
        img += rng.normal(0, 6, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _one(self, prompt: str, face: np.ndarray, seed: int) -> np.ndarray:
        from inscene.faces.align import Alignment, face_blend_mask, invert_transform, paste_back, warp_to_source

        rng = np.random.default_rng(seed)
        h, w = self.height, self.width
        img = self._scene(rng, prompt)
        face_w = w * rng.uniform(*self.face_fraction)  # face-box width ~ half the canonical crop
        s = face_w / (_CANONICAL * 0.5)
        cx = rng.uniform(0.35, 0.65) * w
        cy = rng.uniform(0.18, 0.28) * h
        cloth = _pick(prompt, _COLORS, tuple(int(c) for c in rng.integers(30, 220, 3)))
        # body: torso and legs below the head (drawn before the face so the face stays on top)
        torso_top = int(cy + 0.55 * face_w)
        torso_bottom = int(min(h - 1, cy + 3.2 * face_w))
        cv2.ellipse(img, (int(cx), (torso_top + torso_bottom) // 2),
                    (int(0.95 * face_w), (torso_bottom - torso_top) // 2), 0, 0, 360, cloth, -1)
        cv2.rectangle(img, (int(cx - 0.3 * face_w), int(cy + 0.3 * face_w)), (int(cx + 0.3 * face_w), torso_top + 5),
                      (190, 150, 125), -1)
        legs = tuple(int(0.6 * c) for c in cloth)
        for dx in (-0.45, 0.1):
            left, right = int(cx + dx * face_w), int(cx + (dx + 0.35) * face_w)
            cv2.rectangle(img, (left, torso_bottom - 10), (right, h - 1), legs, -1)
        theta = np.radians(rng.uniform(-self.max_rotation, self.max_rotation))
        c, sn = s * np.cos(theta), s * np.sin(theta)
        centre = (_CANONICAL - 1) / 2
        to_scene = np.array([[c, -sn, cx - (c * centre - sn * centre)], [sn, c, cy - (sn * centre + c * centre)]])
        alignment = Alignment(invert_transform(to_scene), _CANONICAL)
        mask = warp_to_source(face_blend_mask(_CANONICAL, 0.25), alignment, img.shape)
        return paste_back(img, np.asarray(face, dtype=np.uint8), alignment, mask=mask)

    def describe(self) -> dict[str, Any]:
        """Options that shape the images."""
        return {
            "name": self.name, "version": self.version, "width": self.width, "height": self.height,
            "face_fraction": list(self.face_fraction), "max_rotation": self.max_rotation,
            "detector": self.detector, "paper": False,
        }
