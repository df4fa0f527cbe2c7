"""The ArcFace IR-SE network InfiniteYou embeds the reference face with (its identity input).

Provenance: InfiniteYou (Jiang et al., ICCV 2025), used by Face2Scene §6.1. InfiniteYou finds the
reference face with insightface's antelopev2 detector (5 keypoints), warps it to the standard
112x112 ArcFace crop (``insightface.utils.face_align.norm_crop``), scales the BGR pixels to
[-1, 1] and embeds them with facexlib's IR-SE50 ArcFace (``recognition_arcface_ir_se50.pth``),
an L2-normalised 512-D vector that its resampler turns into identity tokens.

This module is a stand-alone IR-SE network whose parameter names match that checkpoint, so it
loads strictly with ``torch.load(..., weights_only=True)``. The stage layout (units per stage and
their widths) and the embedding width are read from the checkpoint's shapes
(:meth:`IRSEBackbone.from_state_dict`): the real file gives IR-SE50 (3/4/14/3 units of
64/128/256/512 channels), and tiny test checkpoints run through the same code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from inscene.errors import InsceneError

#: facexlib's IR-SE50: (channels, units) per stage.
IRSE50_STAGES: tuple[tuple[int, int], ...] = ((64, 3), (128, 4), (256, 14), (512, 3))
ARCFACE_CROP = 112


class SqueezeExcite(nn.Module):
    """Channel attention: global pool -> 1x1 conv down -> ReLU -> 1x1 conv up -> sigmoid gate."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class IRSEUnit(nn.Module):
    """Improved-residual unit with squeeze-excitation (pre-BN, stride on the second conv)."""

    def __init__(self, in_channels: int, channels: int, stride: int, se_reduced: int) -> None:
        super().__init__()
        if in_channels == channels:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels),
            SqueezeExcite(channels, se_reduced),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSEBackbone(nn.Module):
    """IR-SE ArcFace backbone: 112x112 crop in [-1, 1] -> L2-normalised embedding.

    Args:
        stages: ``(channels, units)`` per stage; the first unit of each stage halves the size.
        stem: channels of the input convolution.
        embedding_dim: output width.
        se_ratio: squeeze-excitation reduction (channels // se_ratio inside the gate).
        input_size: side of the input crop (112).
    """

    def __init__(
        self,
        stages: Sequence[tuple[int, int]] = IRSE50_STAGES,
        stem: int = 64,
        embedding_dim: int = 512,
        se_ratio: int = 16,
        input_size: int = ARCFACE_CROP,
    ) -> None:
        super().__init__()
        self.stages = tuple((int(c), int(n)) for c, n in stages)
        self.input_size = input_size
        self.input_layer = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem))
        units: list[nn.Module] = []
        channels = stem
        for depth, count in self.stages:
            for i in range(count):
                units.append(IRSEUnit(channels, depth, 2 if i == 0 else 1, max(1, depth // se_ratio)))
                channels = depth
        self.body = nn.Sequential(*units)
        side = input_size // 2 ** len(self.stages)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.Dropout(0.0),  # facexlib trains with 0.6; inference never drops
            nn.Flatten(),
            nn.Linear(channels * side * side, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``(B, 3, 112, 112)`` crops; returns ``(B, embedding_dim)`` unit vectors."""
        x = self.output_layer(self.body(self.input_layer(x)))
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @staticmethod
    def layout(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Constructor arguments of the backbone ``state`` was saved from (read from its shapes)."""
        try:
            stem = state["input_layer.0.weight"].shape[0]
            n_units = len({k.split(".")[1] for k in state if k.startswith("body.")})
            widths = [state[f"body.{i}.res_layer.1.weight"].shape[0] for i in range(n_units)]
            reduced = state["body.0.res_layer.5.fc1.weight"].shape[0]
            embedding_dim = state["output_layer.3.weight"].shape[0]
        except (KeyError, AttributeError) as exc:
            raise InsceneError(f"not an IR-SE ArcFace state dict (missing {exc})") from None
        stages: list[tuple[int, int]] = []
        for w in widths:  # a stage is a run of equal widths (consecutive stages differ in width)
            if stages and stages[-1][0] == w:
                stages[-1] = (w, stages[-1][1] + 1)
            else:
                stages.append((w, 1))
        return {"stages": tuple(stages), "stem": int(stem), "embedding_dim": int(embedding_dim),
                "se_ratio": max(1, int(widths[0]) // max(1, int(reduced)))}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> IRSEBackbone:
        """Build the backbone ``state`` describes and load it strictly."""
        model = cls(**cls.layout(state))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InsceneError(
                f"ArcFace checkpoint does not match IR-SE: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        return model.eval()


def load_arcface(path: str | os.PathLike) -> IRSEBackbone:
    """Load ``recognition_arcface_ir_se50.pth`` (a plain state dict) with ``weights_only=True``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        raise InsceneError(
            f"cannot read {path} as a tensors-only torch checkpoint: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(state, dict):
        raise InsceneError(f"{path}: expected a state dict")
    return IRSEBackbone.from_state_dict(state)


def arcface_crop(bgr: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    """The standard 112x112 ArcFace crop of a BGR image at 5 keypoints (insightface ``norm_crop``)."""
    import warnings

    from insightface.utils import face_align

    with warnings.catch_warnings():  # scikit-image's deprecation of the estimate() insightface calls
        warnings.simplefilter("ignore", FutureWarning)
        return face_align.norm_crop(
            bgr, landmark=np.asarray(landmarks5, np.float32).reshape(5, 2), image_size=ARCFACE_CROP
        )


def crop_to_tensor(crop_bgr: np.ndarray) -> torch.Tensor:
    """``(112, 112, 3)`` uint8 -> ``(1, 3, 112, 112)`` float in [-1, 1], channels kept in BGR order.

    InfiniteYou feeds the BGR crop as is (its function is named ``extract_arcface_bgr_embedding``);
    the resampler was trained on those embeddings, so the order is reproduced.
    """
    t = torch.from_numpy(np.ascontiguousarray(crop_bgr)).permute(2, 0, 1)[None].float() / 255.0
    return t * 2 - 1
