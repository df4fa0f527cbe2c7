"""One-step SD-Turbo restorer with LoRA, degradation-token conditioning and CFG.

Provenance: Face2Scene (arXiv 2603.16570) §3.2 (tokens concatenated with the positive text tokens
condition SD-Turbo through cross-attention), §4.1 (LoRA ranks 16/32 on the VAE encoder and UNet),
§7.2 (online negative-prompt learning; classifier-free guidance
``z_out = z_neg + lambda_cfg (z_pos - z_neg)``, lambda_cfg = 1.10), §9.2 (Table 5 ranks), §9.1
(Figure 9 CFG sweep). The one-step recipe follows S3Diff, the codebase §4.1 builds on: LQ resized
to the output size, mapped to [-1, 1], padded to a multiple of the model's stride, encoded by the
(LoRA-adapted) VAE encoder; one UNet evaluation at timestep 999; x0 from the scheduler; VAE decode.

What each CFG branch carries (the paper says "features for the positive and negative prompts"):
both branches see the same LQ latent and the same degradation tokens; only the text tokens differ.
The positive branch is ``[positive text tokens ; degradation tokens]``, the negative branch
``[negative text tokens ; degradation tokens]``. This matches training, where negative targets
(the LQ itself, probability p_n) are paired with the negative prompt and the sample's own tokens.
With ``cfg_scale == 1`` only the positive branch runs (the formula reduces to it).

Memory: the VAE is tiled by diffusers' own tiling above ``vae_tile`` pixels and the UNet runs on
overlapping latent tiles (Gaussian-weighted blend) above ``latent_tile``. The defaults (1024 px,
128 latent px, overlap 32) leave a 1024² image untiled, so its result is the plain one-step output,
and bound the activation memory of larger images by that of a 1024² tile (the aim: 24 GB cards in
bf16/fp16; measure with ``python -m benchmarks.perf restorer-stage2``). S3Diff's own defaults are
96/32 latent tiles.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from inscene.errors import BadInputError

__all__ = [
    "UNET_LORA_TARGETS",
    "VAE_LORA_TARGETS",
    "OneStepSD",
    "encode_prompts",
    "predict_x0",
]

#: S3Diff's VAE LoRA targets: every conv/attention projection of the VAE *encoder* (regex).
VAE_LORA_TARGETS = r"^encoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"
#: S3Diff's UNet LoRA targets (module-name suffixes); ``conv_in`` is trained in full instead.
UNET_LORA_TARGETS = (
    "to_k",
    "to_q",
    "to_v",
    "to_out.0",
    "conv",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv_out",
    "proj_in",
    "proj_out",
    "ff.net.2",
    "ff.net.0.proj",
)
ADAPTER = "face2scene"


def encode_prompts(tokenizer: Any, text_encoder: nn.Module, prompts: list[str]) -> torch.Tensor:
    """Text tokens of each prompt (``len(prompts) x 77 x width``, the encoder's last hidden state)."""
    ids = tokenizer(
        prompts, max_length=tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids
    device = next(text_encoder.parameters()).device
    with torch.no_grad():
        return text_encoder(ids.to(device))[0].float()


def predict_x0(scheduler_config: Any, alpha_prod_t: float, model_output: torch.Tensor,
               sample: torch.Tensor) -> torch.Tensor:
    """x0 from one model output, exactly as ``DDPMScheduler.step(...).pred_original_sample``.

    Computed directly (without ``step``) so that no variance noise is drawn: at t = 999 with one
    inference step the step's ``prev_sample`` equals x0 plus noise scaled by 1e-10 from the global
    RNG, which would make outputs non-reproducible.
    """
    alpha = torch.tensor(alpha_prod_t, dtype=torch.float32, device=sample.device)
    beta = 1 - alpha
    kind = scheduler_config.get("prediction_type", "epsilon")
    out, x = model_output.float(), sample.float()
    if kind == "epsilon":
        x0 = (x - beta.sqrt() * out) / alpha.sqrt()
    elif kind == "sample":
        x0 = out
    elif kind == "v_prediction":
        x0 = alpha.sqrt() * x - beta.sqrt() * out
    else:
        raise BadInputError(f"unsupported prediction_type {kind!r}")
    if scheduler_config.get("thresholding", False):
        raise BadInputError("dynamic thresholding is not supported for one-step restoration")
    if scheduler_config.get("clip_sample", False):
        limit = float(scheduler_config.get("clip_sample_range", 1.0))
        x0 = x0.clamp(-limit, limit)
    return x0.to(model_output.dtype)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def _tile_weight(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Separable Gaussian blending weight of one tile (never zero)."""

    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, device=device, dtype=torch.float32)
        return torch.exp(-0.5 * ((x - (n - 1) / 2) / (0.3 * n)) ** 2)

    return (axis(h)[:, None] * axis(w)[None, :]).to(dtype)


class OneStepSD(nn.Module):
    """SD-Turbo run as a one-step restorer, with LoRA on the VAE encoder and the UNet.

    Build with :meth:`from_pretrained` (a local folder in the ``stabilityai/sd-turbo`` layout or
    the Hub id) or :meth:`from_components`. The text encoder is run once, for the two prompts, and
    released: its outputs are kept as the ``prompt_embeds`` buffer (row 0 positive, row 1 negative).

    Args:
        unet: ``UNet2DConditionModel``.
        vae: ``AutoencoderKL``.
        scheduler_config: the scheduler's configuration (prediction type, betas).
        prompt_embeds: ``2 x L x width`` text tokens of the positive and negative prompts.
        vae_lora_rank: LoRA rank on the VAE encoder (16, §4.1); 0 = no VAE LoRA.
        unet_lora_rank: LoRA rank on the UNet (32, §4.1); 0 = no UNet LoRA.
        lora_alpha: LoRA alpha (scaling alpha / rank).
        timestep: the single timestep (999).
        latent_tile: UNet tile side in latent pixels (tiling only above it); None = never tile.
        latent_overlap: overlap of UNet tiles (latent pixels).
        vae_tile: VAE tile side in image pixels (diffusers' tiling above it); None = never tile.
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        scheduler_config: dict[str, Any],
        prompt_embeds: torch.Tensor,
        *,
        vae_lora_rank: int = 16,
        unet_lora_rank: int = 32,
        lora_alpha: float = 8.0,
        timestep: int = 999,
        latent_tile: int | None = 128,
        latent_overlap: int = 32,
        vae_tile: int | None = 1024,
    ) -> None:
        super().__init__()
        from diffusers import DDPMScheduler

        if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 2:
            raise BadInputError(f"prompt_embeds must be 2 x L x width, got {tuple(prompt_embeds.shape)}")
        self.unet = unet
        self.vae = vae
        self.scheduler_config = dict(scheduler_config)
        ddpm = DDPMScheduler.from_config(self.scheduler_config)
        if not 0 <= timestep < ddpm.config.num_train_timesteps:
            raise BadInputError(f"timestep must be in [0, {ddpm.config.num_train_timesteps}), got {timestep}")
        # alpha-bar of the one timestep, kept as a Python float so that casting the module to bf16/fp16
        # never rounds it.
        self.alpha_prod_t = float(ddpm.alphas_cumprod[timestep])
        self.register_buffer("prompt_embeds", prompt_embeds.detach().float().clone(), persistent=False)
        self.timestep = int(timestep)
        self.vae_lora_rank = int(vae_lora_rank)
        self.unet_lora_rank = int(unet_lora_rank)
        self.lora_alpha = float(lora_alpha)
        self.latent_tile = latent_tile
        self.latent_overlap = int(latent_overlap)
        self.vae_tile = vae_tile
        self.cross_attention_dim = int(unet.config.cross_attention_dim)
        if prompt_embeds.shape[-1] != self.cross_attention_dim:
            raise BadInputError(
                f"text width {prompt_embeds.shape[-1]} != UNet cross-attention width {self.cross_attention_dim}"
            )
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.unet_factor = 2 ** (len(unet.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)
        if latent_tile is not None and (latent_tile % self.unet_factor or latent_tile <= latent_overlap):
            raise BadInputError(
                f"latent_tile must be a multiple of {self.unet_factor} larger than the overlap, got {latent_tile}"
            )
        self._add_lora()
        self.unet.requires_grad_(False)
        self.vae.requires_grad_(False)
        self.set_trainable(False)

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def from_components(
        cls,
        *,
        tokenizer: Any,
        text_encoder: nn.Module,
        unet: nn.Module,
        vae: nn.Module,
        scheduler_config: dict[str, Any],
        positive_prompt: str,
        negative_prompt: str,
        **kwargs: Any,
    ) -> OneStepSD:
        """Wrap loaded components (the text encoder only computes the two prompts' tokens)."""
        embeds = encode_prompts(tokenizer, text_encoder, [positive_prompt, negative_prompt])
        return cls(unet, vae, scheduler_config, embeds, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike[str],
        *,
        positive_prompt: str,
        negative_prompt: str,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> OneStepSD:
        """Load SD-Turbo from a folder in the ``stabilityai/sd-turbo`` layout (or a Hub id).

        Weights load in fp32 (call ``.to(dtype)`` for bf16/fp16 inference); the text encoder
        runs on ``device`` once and is dropped.

        Raises:
            BadInputError: the folder lacks one of the components.
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        src = Path(source)
        if src.exists():
            for part in ("tokenizer", "text_encoder", "unet", "vae", "scheduler"):
                if not (src / part).is_dir():
                    raise BadInputError(f"{src} is not an SD-Turbo folder: no {part}/ (stabilityai/sd-turbo layout)")
        name = str(source)
        tokenizer = CLIPTokenizer.from_pretrained(name, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(name, subfolder="text_encoder").to(device)
        unet = UNet2DConditionModel.from_pretrained(name, subfolder="unet")
        vae = AutoencoderKL.from_pretrained(name, subfolder="vae")
        sched = _scheduler_config(name)
        model = cls.from_components(
            tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, vae=vae, scheduler_config=sched,
            positive_prompt=positive_prompt, negative_prompt=negative_prompt, **kwargs,
        )
        del text_encoder
        return model.to(device)

    def _add_lora(self) -> None:
        from peft import LoraConfig

        if self.vae_lora_rank > 0:
            cfg = LoraConfig(r=self.vae_lora_rank, lora_alpha=self.lora_alpha, init_lora_weights="gaussian",
                             target_modules=VAE_LORA_TARGETS)
            self.vae.add_adapter(cfg, adapter_name=ADAPTER)
        if self.unet_lora_rank > 0:
            cfg = LoraConfig(r=self.unet_lora_rank, lora_alpha=self.lora_alpha, init_lora_weights="gaussian",
                             target_modules=list(UNET_LORA_TARGETS))
            self.unet.add_adapter(cfg, adapter_name=ADAPTER)

    def config(self) -> dict[str, Any]:
        """What a checkpoint records about this model (the base model's own config excluded)."""
        return {
            "vae_lora_rank": self.vae_lora_rank,
            "unet_lora_rank": self.unet_lora_rank,
            "lora_alpha": self.lora_alpha,
            "timestep": self.timestep,
            "cross_attention_dim": self.cross_attention_dim,
            "vae_lora_targets": VAE_LORA_TARGETS,
            "unet_lora_targets": list(UNET_LORA_TARGETS),
        }

    # ---- trainable part -----------------------------------------------------------------------

    def _is_trainable(self, part: str, name: str) -> bool:
        return "lora_" in name or (part == "unet" and name.startswith("conv_in."))

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """LoRA weights of the VAE encoder and UNet, and the UNet's ``conv_in`` (§4.1, S3Diff)."""
        for part in ("unet", "vae"):
            for name, p in getattr(self, part).named_parameters():
                if self._is_trainable(part, name):
                    yield f"{part}.{name}", p

    def set_trainable(self, flag: bool = True) -> None:
        """Switch gradients of the trainable part on or off (the base stays frozen)."""
        for _, p in self.named_trainable_parameters():
            p.requires_grad_(flag)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the trained tensors, keyed ``unet.*`` / ``vae.*`` (what checkpoints store)."""
        return {name: p.detach() for name, p in self.named_trainable_parameters()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state_dict` output; every key must match in name and shape.

        Raises:
            BadInputError: missing, unexpected or wrongly shaped tensors (e.g. other LoRA ranks).
        """
        own = dict(self.named_trainable_parameters())
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise BadInputError(
                f"checkpoint does not match the restorer: {len(missing)} missing (e.g. {missing[:2]}), "
                f"{len(extra)} unexpected (e.g. {extra[:2]}) tensors"
            )
        with torch.no_grad():
            for name, p in own.items():
                value = state[name]
                if value.shape != p.shape:
                    raise BadInputError(f"{name}: checkpoint shape {tuple(value.shape)} != model {tuple(p.shape)}")
                p.copy_(value.to(device=p.device, dtype=p.dtype))

    # ---- the one step -------------------------------------------------------------------------

    @property
    def pad_multiple(self) -> int:
        """Image sides are padded to a multiple of this (VAE stride x UNet stride; 64 for SD-Turbo)."""
        return self.vae_factor * self.unet_factor

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def conditioning(self, deg_tokens: torch.Tensor | None, negative: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Encoder hidden states ``[text tokens ; degradation tokens]`` (``B x (77 + T) x width``).

        Args:
            deg_tokens: ``B x T x width`` (T may be 0) or None (no degradation tokens).
            negative: ``B`` booleans, True where the negative prompt is used; None = all positive.
            batch: B.
        """
        idx = torch.zeros(batch, dtype=torch.long, device=self.prompt_embeds.device)
        if negative is not None:
            idx = negative.to(device=idx.device).long()
        text = self.prompt_embeds[idx]
        if deg_tokens is None:
            return text.to(self.dtype)
        if deg_tokens.ndim != 3 or deg_tokens.shape[0] != batch or deg_tokens.shape[-1] != self.cross_attention_dim:
            raise BadInputError(
                f"degradation tokens must be {batch} x T x {self.cross_attention_dim}, got {tuple(deg_tokens.shape)}"
            )
        return torch.cat([text.to(deg_tokens.dtype), deg_tokens], dim=1).to(self.dtype)

    def _vae_tiling(self) -> None:
        vae = self.vae
        if self.vae_tile is None:
            vae.use_tiling = False
            return
        vae.use_tiling = True
        vae.tile_sample_min_size = self.vae_tile
        vae.tile_latent_min_size = self.vae_tile // self.vae_factor

    def encode(self, image: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """VAE latents (scaled) of an image in [-1, 1] (posterior mode, or a sample when training)."""
        self._vae_tiling()
        dist = self.vae.encode(image.to(self.dtype)).latent_dist
        latents = dist.sample() if sample else dist.mode()
        return latents * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] from scaled latents."""
        self._vae_tiling()
        return self.vae.decode(latents / self.scaling_factor).sample.clamp(-1, 1)

    def _unet(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = torch.full((latents.shape[0],), self.timestep, device=latents.device, dtype=torch.long)
        return self.unet(latents, t, encoder_hidden_states=cond).sample

    def unet_output(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction, on overlapping latent tiles when the latent exceeds ``latent_tile``."""
        h, w = latents.shape[-2:]
        tile = self.latent_tile
        if tile is None or (h <= tile and w <= tile):
            return self._unet(latents, cond)
        th, tw = min(tile, h), min(tile, w)
        out = torch.zeros_like(latents, dtype=torch.float32)
        total = torch.zeros((1, 1, h, w), device=latents.device, dtype=torch.float32)
        weight = _tile_weight(th, tw, latents.device, torch.float32)
        for y in _tile_starts(h, th, self.latent_overlap):
            for x in _tile_starts(w, tw, self.latent_overlap):
                pred = self._unet(latents[..., y : y + th, x : x + tw], cond).float()
                out[..., y : y + th, x : x + tw] += pred * weight
                total[..., y : y + th, x : x + tw] += weight
        return (out / total).to(latents.dtype)

    def denoise(
        self,
        latents: torch.Tensor,
        deg_tokens: torch.Tensor | None,
        *,
        negative: torch.Tensor | None = None,
        cfg_scale: float | None = None,
    ) -> torch.Tensor:
        """x0 latents from LQ latents: one UNet step (one branch, or both branches batched with CFG)."""
        b = latents.shape[0]
        if cfg_scale is None or cfg_scale == 1.0:
            pred = self.unet_output(latents, self.conditioning(deg_tokens, negative, b))
        else:
            if negative is not None:
                raise BadInputError("per-sample prompts and CFG are exclusive")
            both = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
            tokens = None if deg_tokens is None else torch.cat([deg_tokens, deg_tokens])
            pos, neg = self.unet_output(torch.cat([latents, latents]), self.conditioning(tokens, both, 2 * b)).chunk(2)
            pred = neg + cfg_scale * (pos - neg)
        return predict_x0(self.scheduler_config, self.alpha_prod_t, pred, latents)

    def forward(
        self,
        lq: torch.Tensor,
        deg_tokens: torch.Tensor | None = None,
        *,
        negative: torch.Tensor | None = None,
        cfg_scale: float | None = None,
        sample_posterior: bool = False,
    ) -> torch.Tensor:
        """Restore ``B x 3 x H x W`` images in [-1, 1] (already at the output size).

        Sides are padded (reflect) to :attr:`pad_multiple` and the output cropped back.

        Args:
            lq: the LQ images, resized to the output size, in [-1, 1].
            deg_tokens: ``B x T x width`` MapNet tokens, or None (no degradation tokens).
            negative: per-sample negative prompt (training); None = positive prompt.
            cfg_scale: guidance scale lambda_cfg; None or 1 = positive branch only.
            sample_posterior: sample the VAE posterior instead of taking its mode (S3Diff training).
        """
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise BadInputError(f"expected B x 3 x H x W, got {tuple(lq.shape)}")
        h, w = lq.shape[-2:]
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        x = lq
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(lq, (0, pw, 0, ph), mode=mode)
        latents = self.encode(x, sample=sample_posterior)
        x0 = self.denoise(latents, deg_tokens, negative=negative, cfg_scale=cfg_scale)
        return self.decode(x0)[..., :h, :w]


def _scheduler_config(name: str) -> dict[str, Any]:
    from diffusers import DDPMScheduler

    cfg = DDPMScheduler.load_config(name, subfolder="scheduler")
    return {k: v for k, v in dict(cfg).items() if not k.startswith("_")}
