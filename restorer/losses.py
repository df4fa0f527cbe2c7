"""Training losses of the one-step restorer: L2, LPIPS and a DINO-backbone GAN.

Provenance: Face2Scene (arXiv 2603.16570) §3.3, Eqs. 2-3 and §4.1: L = lambda_2 ||I_hat - I_HQ||² +
lambda_LPIPS LPIPS(I_hat, I_HQ) + lambda_GAN L_GAN with (2.0, 5.0, 0.5); the discriminator "uses a
frozen DINO backbone with multiple independent classifiers attached to different feature levels"
(following [26] vision-aided GAN and [60] S3Diff).

Choices where the paper is silent, following S3Diff's training code (which uses the
``vision_aided_loss`` package with ``cv_type='dino'``, ``output_type='conv_multi_level'``,
``loss_type='multilevel_sigmoid_s'``):

* backbone DINO ViT-B/16 at 224 px (timm ``vit_base_patch16_224.dino``), frozen and always in eval
  mode; features of blocks 5 and 9 (patch-token maps, layer-normed) and the class token of block
  12 (1-based), i.e. the first, fifth and last of the last eight blocks;
* one head per level: spectral-normalised 3x3 stride-2 conv -> LeakyReLU(0.2) -> 1x1 conv to a
  logit map on patch maps, spectral-normalised Linear -> LeakyReLU -> Linear on the class token;
* sigmoid cross-entropy summed over levels (mean over each map), real label smoothed to 0.8
  ("_s"); the generator uses the non-saturating form (target "real");
* differentiable augmentation (colour, translation, cutout) on both real and fake inputs of the
  discriminator, as ``vision_aided_loss`` applies by default;
* LPIPS with the VGG backbone (S3Diff: ``lpips.LPIPS(net='vgg')``), here pyiqa's LPIPS v0.1
  architecture and weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from inscene.errors import BadInputError

__all__ = [
    "DinoDiscriminator",
    "LPIPSLoss",
    "diff_augment",
    "create_dino_backbone",
]

DINO_WEIGHTS = "dino-vitb16"
LPIPS_WEIGHTS = "lpips-vgg"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# LPIPS


class LPIPSLoss(nn.Module):
    """LPIPS (v0.1, VGG) between images in [-1, 1], mean over the batch; frozen.

    Args:
        pretrained: load the real weights (LPIPS linear layers and torchvision's ImageNet VGG16),
            found with :func:`inscene.weights.locate` (``lpips-vgg``). False builds the same
            architecture with random weights and loads nothing (tests only: its values mean
            nothing).
        weights_path: explicit torch hub folder holding ``pyiqa/LPIPS_v0.1_vgg-a78928a0.pth`` and
            ``checkpoints/vgg16-397923af.pth``.

    Raises:
        MissingWeightsError: ``pretrained`` and the files are not on this machine.
    """

    def __init__(self, pretrained: bool = True, weights_path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        from pyiqa.archs.lpips_arch import LPIPS

        from inscene.quality import pyiqa_sources

        root: Path | None = None
        if pretrained:
            from inscene import weights

            root = weights.locate(LPIPS_WEIGHTS, weights_path, check_requires=False)
        with pyiqa_sources(root, not pretrained):
            self.net = LPIPS(pretrained=pretrained, net="vgg", version="0.1", use_dropout=False)
        self.net.eval().requires_grad_(False)
        self.pretrained = pretrained

    def train(self, mode: bool = True) -> LPIPSLoss:  # noqa: D102 - always eval (frozen, no dropout)
        super().train(False)
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(pred.float(), target.float(), normalize=False).mean()


# --------------------------------------------------------------------------------------------
# DiffAugment (colour, translation, cutout)


def diff_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation of images in [-1, 1]: brightness, saturation, contrast,
    translation by up to 1/8 of the side (zero padding) and one cutout of half the side.
    """
    b, _, h, w = x.shape
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device="cpu").to(dev, x.dtype)

    x = x + (rand(b, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand(b, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * (rand(b, 1, 1, 1) + 0.5) + mean
    # translation: integer shifts in [-h/8, h/8], zero fill
    sh, sw = max(int(h * 0.125 + 0.5), 1), max(int(w * 0.125 + 0.5), 1)
    ty = (rand(b) * (2 * sh + 1)).long().to(dev) - sh
    tx = (rand(b) * (2 * sw + 1)).long().to(dev) - sw
    ys = (torch.arange(h, device=dev)[None, :] - ty[:, None]).clamp(-1, h)
    xs = (torch.arange(w, device=dev)[None, :] - tx[:, None]).clamp(-1, w)
    padded = F.pad(x, (1, 1, 1, 1))
    x = padded[torch.arange(b, device=dev)[:, None, None], :, (ys + 1)[:, :, None], (xs + 1)[:, None, :]]
    x = x.permute(0, 3, 1, 2)
    # cutout: one h/2 x w/2 square per image
    ch, cw = max(int(h * 0.5 + 0.5), 1), max(int(w * 0.5 + 0.5), 1)
    cy = (rand(b) * (h + (1 - ch % 2))).long().to(dev)
    cx = (rand(b) * (w + (1 - cw % 2))).long().to(dev)
    yy = torch.arange(h, device=dev)[None, :, None]
    xx = torch.arange(w, device=dev)[None, None, :]
    inside = ((yy - cy[:, None, None]).abs() < ch // 2 + 1) & ((xx - cx[:, None, None]).abs() < cw // 2 + 1)
    return x * (~inside)[:, None].to(x.dtype)


# --------------------------------------------------------------------------------------------
# DINO discriminator


def create_dino_backbone(
    pretrained: bool = True, weights_path: str | os.PathLike[str] | None = None, **vit_kwargs: Any
) -> nn.Module:
    """The DINO ViT-B/16 backbone (timm ``vit_base_patch16_224``), frozen.

    Args:
        pretrained: load DINO's weights from ``dino-vitb16`` (timm's safetensors of
            ``timm/vit_base_patch16_224.dino``), found with :func:`inscene.weights.locate`.
            False: random init (tests), with ``vit_kwargs`` overriding the architecture (e.g. a
            tiny ``embed_dim``/``depth``); never a silent substitute for the real backbone.
        weights_path: explicit folder or ``model.safetensors`` file.

    Raises:
        MissingWeightsError: ``pretrained`` and the weights are not on this machine.
        BadInputError: architecture overrides given with ``pretrained``.
    """
    import timm

    if pretrained and vit_kwargs:
        raise BadInputError("architecture overrides are only for random-init backbones")
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **vit_kwargs)
    if pretrained:
        from safetensors.torch import load_file

        from inscene import weights

        found = weights.locate(DINO_WEIGHTS, weights_path)
        file = found if found.is_file() else found / "model.safetensors"
        state = load_file(str(file))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


class _PatchHead(nn.Module):
    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 1, kernel_size=1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _TokenHead(nn.Module):
    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Linear(channels, width)), nn.LeakyReLU(0.2), spectral_norm(nn.Linear(width, 1))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DinoDiscriminator(nn.Module):
    """Frozen DINO ViT with independent classifier heads on several feature levels (§3.3).

    Args:
        backbone: a timm ``VisionTransformer`` (see :func:`create_dino_backbone`); frozen here.
        levels: 0-based block indices whose patch-token maps get conv heads (default: the blocks at
            5/12 and 9/12 of the depth: 4 and 8 for ViT-B); the last block's class token always
            gets a linear head.
        head_width: hidden width of the heads (128, as vision-aided GAN's DINO heads).
        real_label: target of real images (0.8: S3Diff's ``multilevel_sigmoid_s``).
        augment: apply :func:`diff_augment` to every discriminator input.
    """

    def __init__(
        self,
        backbone: nn.Module,
        levels: Sequence[int] | None = None,
        head_width: int = 128,
        real_label: float = 0.8,
        augment: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        depth = len(backbone.blocks)
        if levels is None:
            levels = sorted({max(round(depth * 5 / 12) - 1, 0), max(round(depth * 9 / 12) - 1, 0)})
        if any(not 0 <= i < depth - 1 for i in levels):
            raise BadInputError(f"patch levels must be blocks 0..{depth - 2}, got {list(levels)}")
        self.levels = list(levels)
        width = backbone.embed_dim
        self.patch_heads = nn.ModuleList(_PatchHead(width, head_width) for _ in self.levels)
        self.token_head = _TokenHead(width, head_width)
        self.real_label = float(real_label)
        self.augment = augment
        size = backbone.patch_embed.img_size
        self.input_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> DinoDiscriminator:  # noqa: D102 - the backbone stays in eval
        super().train(mode)
        self.backbone.eval()
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        """The trainable part (the heads)."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Logits per level (maps ``B x 1 x h x w`` for patch levels, ``B x 1`` for the class token)."""
        x = diff_augment(images) if self.augment and self.training else images
        x = F.interpolate((x.float() + 1) / 2, size=self.input_size, mode="area")
        x = (x - self.mean) / self.std
        take = [*self.levels, len(self.backbone.blocks) - 1]
        feats = self.backbone.forward_intermediates(
            x, indices=take, return_prefix_tokens=True, norm=True, intermediates_only=True
        )
        out = [head(feats[i][0]) for i, head in enumerate(self.patch_heads)]
        out.append(self.token_head(feats[-1][1][:, 0]))
        return out

    def loss(self, logits: list[torch.Tensor], real: bool, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Sigmoid cross-entropy summed over levels; ``real`` uses the smoothed real label.

        Args:
            logits: :meth:`forward` output.
            real: target "real" (smoothed) or "fake" (0).
            weight: optional per-sample weights (``B``); the loss is their weighted mean (0 when
                all are 0), so every process of a distributed run can run the same forward even
                when some of its samples must not count.
        """
        target = self.real_label if real else 0.0
        total = logits[0].new_zeros((), dtype=torch.float32)
        for lg in logits:
            lg = lg.float()
            per = F.binary_cross_entropy_with_logits(lg, torch.full_like(lg, target), reduction="none")
            per = per.flatten(1).mean(1)
            if weight is None:
                total = total + per.mean()
            else:
                w = weight.to(per)
                total = total + (per * w).sum() / w.sum().clamp_min(1.0)
        return total

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Non-saturating generator loss: the discriminator's "real" loss on generated images."""
        return self.loss(self(fake), real=True)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Real-vs-fake loss of the heads (one forward over ``[real; fake]``; fake is detached)."""
        logits = self(torch.cat([real, fake.detach()]))
        n = real.shape[0]
        return self.loss([lg[:n] for lg in logits], True) + self.loss([lg[n:] for lg in logits], False)
