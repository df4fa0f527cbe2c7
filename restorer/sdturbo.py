"""SD-Turbo's on-disk layout and architecture, and tiny stand-ins built through the real code.

Provenance: Face2Scene (arXiv 2603.16570) §3.2, §4.1: the one-step restorer is SD-Turbo [38]
(``stabilityai/sd-turbo``, an SD 2.1 distillation: OpenCLIP ViT-H text encoder, 1024-wide
cross-attention, 4-channel latents at 1/8 resolution).

No SD-Turbo weights can be downloaded here, so this module provides:

* :data:`SD_TURBO_CONFIGS`: the component configurations of ``stabilityai/sd-turbo`` (SD 2.1
  architecture), to build the real architecture with random weights (GPU benchmarks);
* :func:`write_tiny_sdturbo`: a tiny random SD-Turbo-like model set (same component classes, a
  small cross-attention width) saved in the ``stabilityai/sd-turbo`` folder layout
  (``model_index.json``, ``tokenizer/``, ``text_encoder/``, ``vae/``, ``unet/``, ``scheduler/``), so
  tests, the CPU benchmark and the demo load it through diffusers'/transformers' ``from_pretrained``.
  Its CLIP tokenizer is a byte-level BPE vocabulary written here (256 byte symbols, their
  end-of-word forms, a few merges and the two special tokens): no download.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["SD_TURBO_CONFIGS", "MODEL_INDEX", "build_components", "write_tiny_sdturbo", "write_tiny_tokenizer"]

#: ``model_index.json`` of the ``stabilityai/sd-turbo`` layout.
MODEL_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.24.0.dev0",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "use_karras_sigmas": False,
}

#: Component configurations of ``stabilityai/sd-turbo`` (the SD 2.1 architecture).
SD_TURBO_CONFIGS: dict[str, dict[str, Any]] = {
    "unet": {
        "act_fn": "silu",
        "attention_head_dim": [5, 10, 20, 20],
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "use_linear_projection": True,
    },
    "vae": {
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 768,
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    "text_encoder": {
        "hidden_act": "gelu",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "max_position_embeddings": 77,
        "num_attention_heads": 16,
        "num_hidden_layers": 23,
        "projection_dim": 512,
        "vocab_size": 49408,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    },
    "scheduler": _SCHEDULER,
}


def _tiny_configs(cross_attention_dim: int) -> dict[str, dict[str, Any]]:
    return {
        "unet": {
            "act_fn": "silu",
            "attention_head_dim": [2, 4],
            "block_out_channels": [16, 32],
            "cross_attention_dim": cross_attention_dim,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "in_channels": 4,
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "out_channels": 4,
            "sample_size": 16,
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "use_linear_projection": True,
        },
        "vae": {
            "act_fn": "silu",
            "block_out_channels": [8, 16, 16],
            "down_block_types": ["DownEncoderBlock2D"] * 3,
            "in_channels": 3,
            "latent_channels": 4,
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "out_channels": 3,
            "sample_size": 32,
            "scaling_factor": 0.18215,
            "up_block_types": ["UpDecoderBlock2D"] * 3,
        },
        "text_encoder": {
            "hidden_act": "gelu",
            "hidden_size": cross_attention_dim,
            "intermediate_size": 2 * cross_attention_dim,
            "max_position_embeddings": 77,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "projection_dim": cross_attention_dim,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        "scheduler": _SCHEDULER,
    }


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2/CLIP convention)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


#: A few merges, enough that common prompt words are not all single characters.
_TINY_MERGES = ("h i", "g h</w>", "t h", "e r", "i n", "a n", "o n", "r e", "i t", "o r")


def write_tiny_tokenizer(folder: str | os.PathLike[str]) -> Path:
    """A CLIP tokenizer folder (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``).

    The vocabulary holds every byte symbol, its end-of-word form, the merge results and the special
    tokens ``<|startoftext|>`` / ``<|endoftext|>``; ``model_max_length`` is 77 as in SD-Turbo.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in _TINY_MERGES)]:
        vocab.setdefault(s, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_TINY_MERGES) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def build_components(configs: dict[str, dict[str, Any]], vocab_size: int | None = None) -> dict[str, Any]:
    """Random-weight ``unet``, ``vae``, ``text_encoder`` and ``scheduler`` from configurations.

    Args:
        configs: like :data:`SD_TURBO_CONFIGS`.
        vocab_size: override the text encoder's vocabulary size (to match a tokenizer).
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_cfg = dict(configs["text_encoder"])
    if vocab_size is not None:
        text_cfg["vocab_size"] = vocab_size
    return {
        "unet": UNet2DConditionModel.from_config(configs["unet"]),
        "vae": AutoencoderKL.from_config(configs["vae"]),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**text_cfg)),
        "scheduler": EulerDiscreteScheduler.from_config(configs["scheduler"]),
    }


def write_tiny_sdturbo(
    folder: str | os.PathLike[str], *, cross_attention_dim: int = 32, seed: int = 0
) -> Path:
    """Save a tiny random SD-Turbo-like model set in the ``stabilityai/sd-turbo`` layout.

    The components are the real classes (``CLIPTokenizer``, ``CLIPTextModel``, ``AutoencoderKL``,
    ``UNet2DConditionModel``, ``EulerDiscreteScheduler``) built from small configurations with
    ``from_config`` and written with ``save_pretrained`` (safetensors), so loading them exercises
    the same ``from_pretrained`` code as the real model. Latents are at 1/4 resolution (three VAE
    levels) and the UNet has two levels (cross-attention at the lower one): inputs are padded to 8 px.

    Args:
        folder: where to write (created).
        cross_attention_dim: the UNet's cross-attention width = the text width = MapNet token width.
        seed: torch seed of the random weights.

    Returns:
        The folder.
    """
    import torch

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = write_tiny_tokenizer(out / "tokenizer")
    vocab_size = len(json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8")))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = build_components(_tiny_configs(cross_attention_dim), vocab_size=vocab_size)
    for name, part in parts.items():
        part.save_pretrained(out / name)
    (out / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2), encoding="utf-8")
    return out
