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
    min_face_area_fraction: float = Field(
        0.01,
        description="§6.2 Stage 2: face box area >= 1% of the image area, measured relative to the 1024x1024 "
        "Stage-1 crop (crop_size; Stage 2 runs on Stage 1's output, so the paper's 'relative to the full "
        "image' is the full crop). The fraction of the original, uncropped photo is logged too, as "
        "face_area_fraction_orig in the decision log (recorded, not thresholded).",
    )
    min_musiq: float = Field(65.0, description="§6.2 Stage 3 / §4.1: MUSIQ >= 65.")
    min_clipiqa: float = Field(0.65, description="§6.2 Stage 3 / §4.1: CLIP-IQA >= 0.65.")
    min_maniqa: float = Field(0.40, description="§6.2 Stage 3 / §4.1: MANIQA >= 0.40.")
    face_select: Literal["largest", "score"] = Field(
        "largest",
        description="Which face Stage 1 keeps the crop around when there are several: the largest box "
        "(default) or the highest detector score (paper silent).",
    )
    detect_short_side: int = Field(
        704,
        gt=0,
        description="Stage 1 detects faces on a copy of the resized image whose shorter side is this "
        "(paper silent). The smallest face Stage 2 keeps (1% of the 1024x1024 crop, ~102 px) is then "
        ">= 70 px in the copy, 15% above the smallest face dlib HOG finds at upsample 0 (measured: 61 px "
        "on the astronaut, 48-55 px on t1.jpg); a copy that small halves detection time against 1024.",
    )
    dlib_upsample: int = Field(
        0,
        ge=0,
        description="dlib upsampling in Stage 1 (paper silent): 0, since the detection copy already "
        "shows every usable face at >= 70 px (upsample 1 costs 4x more and only finds smaller faces).",
    )
    blur_face_side: int = Field(
        256,
        gt=0,
        description="Stage 2 face blur: the face box of the 1024 crop is downscaled (never upscaled) "
        "to this longer side before the Laplacian variance, so close-ups and small faces compare "
        "(paper silent).",
    )
    min_blur_face: float = Field(
        35.0,
        ge=0,
        description="Stage 2 (§6.2 names the variance of the Laplacian, not its threshold): Laplacian "
        "variance of the face region (8-bit gray, ksize 1, at blur_face_side) must reach this. "
        "Measured on the astronaut / t1.jpg faces: sharp 823 / 265, Gaussian blur sigma 1: 92 / 45, "
        "sigma 1.5: 42 / 20, sigma 2: 24 / 11; 35 keeps sigma <= 1, rejects sigma >= 2 "
        "(pipelines.filter_real.measure_thresholds).",
    )
    min_blur_image: float = Field(
        20.0,
        ge=0,
        description="Stage 2 (§6.2, threshold not given): Laplacian variance of the whole 1024x1024 "
        "crop (8-bit gray, ksize 1) must reach this. Measured on the astronaut / t1.jpg: sharp 861 / "
        "207, sigma 1: 66 / 32, sigma 2: 12 / 7; t1.jpg sharp only within 2x its face box, the rest "
        "blurred (bokeh): 28, within 1x: 14. 20 keeps sigma <= 1, rejects sigma >= 2 and portraits "
        "whose sharp part is under ~10% of the frame (pipelines.filter_real.measure_thresholds).",
    )
    max_piqe: float = Field(
        50.0,
        ge=0,
        description="Stage 3 without the paper's IQA weights: keep PIQE <= this (the embedded, "
        "weight-free fallback; NOT the paper's criterion). 50 is PIQE's 'fair' limit (Venkatanath et "
        "al. 2015). Measured on the astronaut / t1.jpg: sharp 33.8 / 49.7, sigma 1 blur 75 / 78, "
        "JPEG q30 56 / 58, degradation presets d1 100 / 100, d4 77 / 79 (all rejected); noise-"
        "dominated d2/d3 score 10-34 and pass (a PIQE blind spot) (pipelines.filter_real.measure_thresholds).",
    )


class SyntheticSettings(_Settings):
    """Synthetic scenes with InfiniteYou on FLUX.1-dev (§4.1, §6.1, Figure 5)."""

    min_identity_similarity: float = Field(0.55, description="§6.1: keep scenes with ArcFace similarity >= 0.55.")
    val_identities: int = Field(100, description="§6.1: 100 identities held out for validation.")
    source_identities: int = Field(1005, description="§4.1: 1,005 CelebRef-HQ identities sampled.")
    infiniteyou_stage: Literal["sim_stage1", "aes_stage2"] = Field(
        "sim_stage1", description="§6.1: stage-1 (similarity) weights for stronger identity."
    )
    per_identity: int = Field(
        12,
        gt=0,
        description="Accepted scenes per identity (paper silent on the quota; §4.1/§6.1 keep 12,595 "
        "scenes of 1,005 identities, ~12.5 each).",
    )
    max_attempts: int = Field(
        40, gt=0, description="Generations tried per identity before giving up (paper silent)."
    )
    width: int = Field(864, gt=0, description="Output width (paper silent; InfiniteYou's default 864x1152).")
    height: int = Field(1152, gt=0, description="Output height (paper silent; InfiniteYou's default 864x1152).")
    steps: int = Field(30, gt=0, description="Denoising steps (paper silent; InfiniteYou's default).")
    guidance: float = Field(3.5, description="FLUX guidance (paper silent; InfiniteYou's default).")
    antiblur_lora_scale: float = Field(
        1.0, description="§6.1 uses the anti-blur LoRA; its scale is not given (the LoRA's card suggests 1.0-1.5)."
    )
    identities_per_partition: int = Field(
        4,
        gt=0,
        description="Identities per Dask task and per shard (~50 PNG scenes, ~100 MB at 864x1152; paper silent).",
    )


class RawSettings(_Settings):
    """The real test split from phone RAW captures (§4.1 'Test data', §6.3)."""

    iso_groups: tuple[int, ...] = Field((3200, 1600, 800), description="§6.3: captures at ISO 3200/1600/800.")
    use_camera_wb: bool = Field(
        True, description="Develop with the camera's as-shot white balance (paper silent beyond 'rawpy', §6.3)."
    )
    output_bps: Literal[8, 16] = Field(
        8, description="Bits per output sample (paper silent; 8-bit like every other InScene LQ)."
    )
    demosaic: Literal["AHD", "LINEAR", "VNG", "PPG", "DCB", "DHT", "AAHD"] = Field(
        "AHD", description="LibRaw demosaic (rawpy's default, AHD; AMaZE/LMMSE need GPL packs rawpy's wheels lack)."
    )
    gamma: tuple[float, float] = Field(
        (2.222, 4.5), description="Output curve (power, toe slope): rawpy's default, the BT.709 curve."
    )
    auto_bright: bool = Field(
        True, description="LibRaw's histogram auto-brightness (rawpy's default; paper silent)."
    )
    auto_bright_thr: float = Field(
        0.01, ge=0, lt=1, description="Share of pixels auto-brightness lets clip (LibRaw's default)."
    )
    highlight_mode: Literal["clip", "ignore", "blend", "reconstruct"] = Field(
        "clip", description="Highlight handling (rawpy's default, clip)."
    )
    baseline_exposure: bool = Field(
        False,
        description="Apply a DNG's BaselineExposure through LibRaw's exposure shift (rawpy does not by "
        "default; paper silent).",
    )
    output_format: Literal["png", "jpeg"] = Field(
        "png", description="Developed image format: lossless PNG (paper silent) or JPEG at jpeg_quality."
    )
    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG quality when output_format is jpeg.")


class DegradationSettings(_Settings):
    """Degradation pipeline usage (§4.1): ``inscene degrade`` writes this many LQ versions per image
    when ``--versions`` is not given (:meth:`versions_for`)."""

    train_versions_per_image: int = Field(
        5, ge=1, description="§4.1: five independently degraded versions per clean training image."
    )
    val_versions_per_image: int = Field(1, ge=1, description="§4.1: one fixed LQ per validation image.")

    def versions_for(self, split: str) -> int:
        """LQ versions per image of ``split``: the training count for ``train`` (or ``train-*``,
        ``train_*``), the validation count (one fixed LQ) for every other split."""
        is_train = split == "train" or split.startswith(("train-", "train_"))
        return self.train_versions_per_image if is_train else self.val_versions_per_image


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
    positive_prompt: str = Field(
        "a high-resolution, 8K, ultra-realistic sharp image, vibrant colors, and natural lighting",
        description="§7.2: the generic high-quality prompt of the positive branch (the paper's wording).",
    )
    negative_prompt: str = Field(
        "oil painting, cartoon, blur, dirty, messy, low quality, deformation, low resolution, oversmooth",
        description="§7.2: the fixed negative prompt (CFG negative branch; negative targets in training).",
    )
    neg_prompt_prob: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="§7.2 p_n: paper silent on its value; S3Diff's default 0.05 (the codebase §4.1 builds on).",
    )
    lora_alpha: float = Field(
        8.0, gt=0, description="LoRA alpha: paper silent; S3Diff leaves peft's default (8), pinned here."
    )
    lambda_l2: float = Field(2.0, description="§4.1: lambda_L2 = 2.0.")
    lambda_lpips: float = Field(5.0, description="§4.1: lambda_LPIPS = 5.0.")
    lambda_gan: float = Field(0.5, description="§4.1: lambda_GAN = 0.5.")
    learning_rate: float = Field(2e-5, gt=0, description="§4.1: learning rate 2e-5 (AdamW, as S3Diff).")
    train_iterations: int = Field(20_000, gt=0, description="§4.1: 20K iterations.")
    train_batch_size: int = Field(64, gt=0, description="§4.1: effective batch size 64 (8 A100 GPUs).")


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


class HubSettings(_Settings):
    """Publishing to the Hugging Face Hub (`inscene publish`; paper silent: the Hub's recommendations)."""

    shard_max_bytes: int = Field(
        1_000_000_000, gt=0, description="Published shards of about 1 GB (Hub recommendation; paper silent)."
    )
    shard_max_count: int = Field(
        10_000, gt=0, description="Samples per published shard at most (paper silent; bytes usually bound first)."
    )
    max_files_per_folder: int = Field(
        10_000, gt=0, description="The Hub wants fewer than 10k files per folder (paper silent)."
    )
    full_check_max_bytes: int = Field(
        2_000_000_000,
        gt=0,
        description="The dry run loads splits fully (temporary Arrow cache) up to this many shard bytes and "
        "streams every row above (paper silent).",
    )


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
    hub: HubSettings = Field(default_factory=HubSettings)

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
