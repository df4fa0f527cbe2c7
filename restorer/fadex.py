"""FaDeX: the Face-derived Degradation eXtractor (Face2Scene §3.2, §7.1, §7.2, §9.3).

A lightweight convolutional encoder E_φ over the channel-wise concatenation of an aligned face pair,
x̃ = [x_HQ ‖ x_LQ] (6 channels), giving the spatial degradation code Z_face (256 channels, §7.2),
then GAP → projection head g_ψ (Linear + LeakyReLU + Linear, §7.1) → unit-normalised q for the
contrastive loss (Eq. 1). Stage II consumes Z_face; q exists for training and analysis.

Architecture (the paper gives the block type and Z_face's width, not the depth or widths: ours):
a stack of 3x3 Conv + BatchNorm + LeakyReLU blocks; the default has one stride-2 block, so the
encoder's total stride is 2 and a 16 px face (the smallest usable one, §9.3) gives an 8x8 Z_face,
which MapNet's stride-2 patch embedding turns into the 4x4 grid of its finest tokens. A larger
total stride raises the smallest usable face to 8 x stride (:attr:`FadexConfig.min_face_px`; 32 px
for the CPU recipe's stride 4): the restorer's Stage I and its training follow it. The encoder
is fully convolutional, hence resolution-agnostic (§8.3); inputs are pairs in [0, 1], mapped to
[-1, 1] inside.

Checkpoints are a ``.safetensors`` state dict with the :class:`FadexConfig` beside it as JSON
(:meth:`FaDeX.save_pretrained` / :meth:`FaDeX.from_pretrained`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from inscene.errors import BadInputError
from restorer.mapnet import MIN_ZFACE_SIDE

__all__ = ["FadexConfig", "FaDeX", "FadexOutput", "pair_tensor", "CONFIG_NAME", "WEIGHTS_NAME"]

CONFIG_NAME = "fadex_config.json"
WEIGHTS_NAME = "fadex.safetensors"
#: The smallest input side the encoder accepts (§9.3: a 16x16 face crop).
MIN_INPUT = 16


@dataclass
class FadexConfig:
    """FaDeX architecture.

    Attributes:
        in_channels: 6 = [x_HQ ‖ x_LQ] (§3.2).
        widths: output channels of each 3x3 Conv + BN + LeakyReLU block; the last is Z_face's
            channel count (256, §7.2).
        strides: stride of each block (total stride 2 by default: see the module docstring).
        proj_hidden: hidden width of the projection head.
        proj_dim: dimension p of the contrastive embedding q.
        negative_slope: LeakyReLU slope.
        residual_init: start half of the first block's filters as residual filters (their x_LQ
            weights the negative of their x_HQ weights), so they see x_LQ − x_HQ from the first
            step. Paper silent; measured on the CPU recipe's pairs: with fully random filters the
            content (10x larger than the residual) dominates and training collapses to a constant
            code (all cosines 0.999 within 300 steps); with residual filters it does not.
    """

    in_channels: int = 6
    widths: tuple[int, ...] = (64, 128, 128, 256, 256)
    strides: tuple[int, ...] = (1, 2, 1, 1, 1)
    proj_hidden: int = 256
    proj_dim: int = 128
    negative_slope: float = 0.2
    residual_init: bool = True

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.strides = tuple(int(s) for s in self.strides)
        if len(self.widths) != len(self.strides) or not self.widths:
            raise BadInputError(f"FaDeX widths {self.widths} and strides {self.strides} must have the same length")
        if any(w < 1 for w in self.widths) or any(s not in (1, 2) for s in self.strides):
            raise BadInputError("FaDeX widths must be >= 1 and strides 1 or 2")
        if self.in_channels != 6:
            raise BadInputError(f"FaDeX reads [x_HQ || x_LQ]: in_channels must be 6, got {self.in_channels}")

    @property
    def channels(self) -> int:
        """Channels of Z_face."""
        return self.widths[-1]

    @property
    def total_stride(self) -> int:
        """Input pixels per Z_face cell (per side)."""
        return int(np.prod(self.strides))

    @property
    def min_face_px(self) -> int:
        """Smallest face crop side Stage II can use with this encoder: MapNet needs an 8x8 Z_face,
        so 8 x the total stride, and never below the paper's 16 px (§9.3); 16 for the default
        (stride 2), 32 for a stride-4 encoder such as the CPU recipe's."""
        return max(MIN_INPUT, MIN_ZFACE_SIDE * self.total_stride)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        d = asdict(self)
        d["widths"], d["strides"] = list(self.widths), list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FadexConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise BadInputError(f"unknown FaDeX config keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> FadexConfig:
        """The config of a checkpoint folder (or of its ``.safetensors`` file, config beside it),
        without loading the weights."""
        path = Path(path)
        weights = path / WEIGHTS_NAME if path.is_dir() else path
        if not weights.is_file():
            raise BadInputError(f"no FaDeX weights at {weights}")
        cfg_path = weights.with_name(CONFIG_NAME)
        if not cfg_path.is_file():
            raise BadInputError(f"no FaDeX config beside the weights: {cfg_path}")
        try:
            return cls.from_dict(json.loads(cfg_path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise BadInputError(f"bad FaDeX config {cfg_path}: {exc}") from exc


@dataclass
class FadexOutput:
    """What :meth:`FaDeX.encode` returns.

    Attributes:
        z_face: (B, C, H', W') spatial degradation code (Stage II's input).
        z: (B, C) its global average.
        q: (B, p) unit-normalised projection (the contrastive space).
    """

    z_face: torch.Tensor
    z: torch.Tensor
    q: torch.Tensor


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int, slope: float) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(slope, inplace=True),
        )


class FaDeX(nn.Module):
    """The FaDeX encoder E_φ plus projection head g_ψ (§3.2, §7.1).

    Args:
        config: the architecture (default: :class:`FadexConfig`).
    """

    def __init__(self, config: FadexConfig | None = None) -> None:
        super().__init__()
        self.config = config or FadexConfig()
        c = self.config
        blocks, cin = [], c.in_channels
        for w, s in zip(c.widths, c.strides, strict=True):
            blocks.append(_Block(cin, w, s, c.negative_slope))
            cin = w
        self.encoder = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Linear(c.channels, c.proj_hidden),
            nn.LeakyReLU(c.negative_slope, inplace=True),
            nn.Linear(c.proj_hidden, c.proj_dim),
        )
        if c.residual_init:
            with torch.no_grad():
                w = self.encoder[0][0].weight  # (out, 6, 3, 3): input channels [HQ RGB, LQ RGB]
                half = w.shape[0] // 2
                w[:half, 3:] = -w[:half, :3]

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 6:
            raise BadInputError(f"FaDeX expects (B, 6, H, W) pairs [x_HQ || x_LQ], got {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_INPUT:
            raise BadInputError(
                f"FaDeX needs pairs of at least {MIN_INPUT}x{MIN_INPUT} px (§9.3), got {tuple(x.shape[-2:])}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Z_face of pairs ``x`` in [0, 1], shape (B, 6, H, W)."""
        self._check(x)
        return self.encoder(x * 2.0 - 1.0)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """q = g_ψ(z) / ||g_ψ(z)||."""
        return F.normalize(self.head(z), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-normalised q (B, p) of pairs ``x``."""
        return self.project(self.features(x).mean(dim=(2, 3)))

    def encode(self, x: torch.Tensor) -> FadexOutput:
        """Z_face (what Stage II consumes), its GAP z and q."""
        z_face = self.features(x)
        z = z_face.mean(dim=(2, 3))
        return FadexOutput(z_face=z_face, z=z, q=self.project(z))

    # -- checkpoints ------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
        """Write ``fadex.safetensors`` + ``fadex_config.json`` to ``folder``; returns the weights path."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        weights = folder / WEIGHTS_NAME
        tmp = weights.with_name(weights.name + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})
        tmp.replace(weights)
        (folder / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return weights

    @classmethod
    def from_pretrained(cls, path: str | Path, *, map_location: str = "cpu") -> FaDeX:
        """Load a checkpoint folder (or its ``.safetensors`` file, config beside it), in eval mode."""
        from safetensors.torch import load_file

        path = Path(path)
        weights = path / WEIGHTS_NAME if path.is_dir() else path
        model = cls(FadexConfig.from_pretrained(path))  # checks that the weights and config exist
        try:
            state = load_file(str(weights), device=map_location)
        except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
            raise BadInputError(f"cannot read FaDeX weights {weights}: {exc}") from exc
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BadInputError(f"FaDeX weights {weights} do not match their config: {str(exc)[:200]}") from exc
        return model.eval()


def pair_tensor(x_hq: np.ndarray, x_lq: np.ndarray) -> torch.Tensor:
    """One pair of H x W x 3 uint8 crops as a (1, 6, H, W) float tensor in [0, 1]."""
    if x_hq.shape != x_lq.shape or x_hq.ndim != 3 or x_hq.shape[2] != 3:
        raise BadInputError(f"pair crops must be equal HxWx3 arrays, got {x_hq.shape} and {x_lq.shape}")
    arr = np.concatenate([x_hq, x_lq], axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float().div_(255.0)
