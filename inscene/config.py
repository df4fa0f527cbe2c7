"""Typed settings. The defaults ARE the paper's values (Face2Scene, arXiv 2603.16570), each cited.

One model per concern; every command records the settings it ran with, flat, in its output
(`InsceneConfig.flat()`), so a run can be reproduced from its output folder alone. Where the paper
is silent the default is our choice and the field's description says so ("paper silent").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ImageIOSettings(_Settings):
    """Safe decoding limits."""

    max_pixels: int = Field(
        200_000_000,
        gt=0,
        description="Decompression-bomb guard: images with more pixels are rejected before "
        "decoding (paper silent; phone sensors are <= 200 MP).",
    )


class ShardSettings(_Settings):
    """WebDataset shard sizing (DESIGN.md 'Shards'; paper silent)."""

    max_count: int = Field(1000, gt=0, description="Samples per shard at most.")
    max_bytes: int = Field(1_000_000_000, gt=0, description="Bytes per shard at most (~1 GB, Hub-friendly).")


class RealFilterSettings(_Settings):
    """The three-stage real-photo filter (§6.2, Figure 6; CC12M variant §4.1)."""

    min_short_side_gallery: int = Field(1000, description="§6.2 Stage 1: shorter side >= 1000 px.")
    min_short_side_cc12m: int = Field(1024, description="§4.1: CC12M shorter side >= 1024 px.")
    crop_size: int = Field(1024, description="§6.2 Stage 1: resize min(H,W)=1024, crop 1024x1024 keeping the face box.")
    min_face_area_fraction: float = Field(0.01, description="§6.2 Stage 2: face box area >= 1% of the image.")
    min_musiq: float = Field(65.0, description="§6.2 Stage 3 / §4.1: MUSIQ >= 65.")
    min_clipiqa: float = Field(0.65, description="§6.2 Stage 3 / §4.1: CLIP-IQA >= 0.65.")
    min_maniqa: float = Field(0.40, description="§6.2 Stage 3 / §4.1: MANIQA >= 0.40.")


class SyntheticSettings(_Settings):
    """Synthetic scenes with InfiniteYou on FLUX.1-dev (§4.1, §6.1, Figure 5)."""

    min_identity_similarity: float = Field(0.55, description="§6.1: keep scenes with ArcFace similarity >= 0.55.")
    val_identities: int = Field(100, description="§6.1: 100 identities held out for validation.")
    source_identities: int = Field(1005, description="§4.1: 1,005 CelebRef-HQ identities sampled.")
    infiniteyou_stage: Literal["sim_stage1", "aes_stage2"] = Field(
        "sim_stage1", description="§6.1: stage-1 (similarity) weights for stronger identity."
    )


class RawSettings(_Settings):
    """The real test split from phone RAW captures (§4.1 'Test data', §6.3)."""

    iso_groups: tuple[int, ...] = Field((3200, 1600, 800), description="§6.3: captures at ISO 3200/1600/800.")


class DegradationSettings(_Settings):
    """Degradation pipeline usage (§4.1)."""

    train_versions_per_image: int = Field(
        5, description="§4.1: five independently degraded versions per clean training image."
    )
    val_versions_per_image: int = Field(1, description="§4.1: one fixed LQ per validation image.")


class RestorerSettings(_Settings):
    """Face2Scene restorer (§3, §4.1, §7.2, §9.2, §9.3)."""

    face_size: int = Field(512, description="§3.1: Ref-FR works on aligned 512x512 crops.")
    min_face_px: int = Field(16, description="§9.3: 4x4 grid at the last scale -> smallest usable face 16x16.")
    fadex_channels: int = Field(256, description="§7.2: Z_face has 256 channels.")
    mapnet_channels: int = Field(512, description="§7.2: patch embedding to 512 channels.")
    mapnet_heads: int = Field(8, description="§7.2: DegAttn with eight heads.")
    token_dim: int = Field(1024, description="§7.2: tokens match SD-Turbo cross-attention width.")
    num_tokens: Literal[0, 1, 5, 21] = Field(21, description="§3.2/§9.3: 16+4+1 multi-scale tokens (Table 6).")
    vae_lora_rank: int = Field(16, description="§9.2, Table 5: VAE encoder LoRA rank 16.")
    unet_lora_rank: int = Field(32, description="§9.2, Table 5: UNet LoRA rank 32.")
    timestep: int = Field(999, description="One-step SD-Turbo at t=999 (S3Diff, the codebase §4.1 builds on).")
    cfg_scale: float = Field(1.10, description="§7.2: lambda_cfg = 1.10 in all experiments.")


class FaceSettings(_Settings):
    """Face detection, identity embeddings and alignment (inscene.faces; §3.1, §6.1, §6.2)."""

    detector: str = Field(
        "dlib",
        description="Default detector. The paper's real filter uses YOLOv8-face (§6.2); 'dlib' is the "
        "embedded default that works offline (DESIGN.md 'Embedded default').",
    )
    embedder: str = Field(
        "dlib",
        description="Default identity embedder; the paper's is ArcFace ('arcface', §6.1, Table 7).",
    )
    detect_max_side: int | None = Field(
        1024,
        gt=0,
        description="Detect on a copy downscaled to this longest side and map boxes back; None = "
        "full resolution (paper silent; at 1024 a square face covering 1% of a square image, §6.2's "
        "minimum, stays >= 100 px wide in the copy).",
    )
    detect_min_short_side: int = Field(
        160,
        gt=0,
        description="Never downscale the detection copy's shorter side below this (extreme aspect "
        "ratios; paper silent).",
    )
    dlib_upsample: int = Field(
        1,
        ge=0,
        description="dlib HOG/MMOD upsampling of the detection copy; measured: 0 finds faces down to "
        "~60 px, 1 down to ~30 px (paper silent).",
    )
    insightface_pack: Literal["antelopev2", "buffalo_l"] = Field(
        "antelopev2", description="insightface model pack (InfiniteYou, §6.1, uses antelopev2)."
    )
    insightface_det_size: int = Field(640, gt=0, description="SCRFD input size (insightface default).")
    insightface_det_thresh: float = Field(0.5, description="SCRFD score threshold (insightface default).")
    yolo_weights: str = Field("yolov8n-face", description="YOLO-face weight name (§6.2, YapaLab/yolo-face).")
    yolo_conf: float = Field(0.25, description="YOLO-face confidence threshold (YapaLab/yolo-face README).")
    yolo_imgsz: int = Field(1280, gt=0, description="YOLO-face inference size (YapaLab/yolo-face README).")


class InsceneConfig(_Settings):
    """All settings, grouped by concern."""

    imageio: ImageIOSettings = Field(default_factory=ImageIOSettings)
    shards: ShardSettings = Field(default_factory=ShardSettings)
    real_filter: RealFilterSettings = Field(default_factory=RealFilterSettings)
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    raw: RawSettings = Field(default_factory=RawSettings)
    degradation: DegradationSettings = Field(default_factory=DegradationSettings)
    restorer: RestorerSettings = Field(default_factory=RestorerSettings)
    faces: FaceSettings = Field(default_factory=FaceSettings)

    def flat(self) -> dict[str, Any]:
        """Settings as one flat ``{"group.field": value}`` dict (what runs record as JSON)."""
        out: dict[str, Any] = {}
        for group, model in self:
            for name, value in model.model_dump(mode="json").items():
                out[f"{group}.{name}"] = value
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> InsceneConfig:
        """Inverse of :meth:`flat` (unknown keys are an error)."""
        nested: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            group, _, name = key.partition(".")
            nested.setdefault(group, {})[name] = value
        return cls.model_validate(nested)
