"""Tiny random InfiniteYou/FLUX weights in the real on-disk layouts (tests, CPU smoke runs).

Provenance: the layouts of FLUX.1-dev (diffusers folders, sharded transformer), InfiniteYou's
release (``infu_flux_v1.0/<stage>/InfuseNetModel/`` sharded + ``image_proj_model.bin``) and
facexlib's ``recognition_arcface_ir_se50.pth``, used by Face2Scene §6.1. Every component is built
from a small config (``from_config``-style constructors), saved with ``save_pretrained`` /
``torch.save`` of a state dict, and read back by :class:`~.infiniteyou.InfiniteYouGenerator`
through exactly the code that reads the real weights. Tokenizers are built from a small
vocabulary with ``tokenizers``-backed transformers classes: no download anywhere.

The images such weights produce are noise: this exercises the code path, it makes no data.
"""

from __future__ import annotations

import json
import os
import shutil
import string
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipelines.generators.infiniteyou import InfiniteYouGenerator

_MARKER = ".inscene-tiny-complete"
_WORDS = (
    "a an the of in on at with and is are by to photo person full body standing walking wearing background "
    "city street park beach forest light lit sky scene sharp detailed they smiling holding"
).split()
TEXT_DIM = 32  # CLIP hidden = T5 d_model = FLUX joint/pooled width = identity token width
ID_DIM = 32  # ArcFace embedding width of the tiny model


def tiny_paths(root: str | os.PathLike) -> dict[str, Path]:
    """Where :func:`make_tiny_infiniteyou` puts each component under ``root``."""
    root = Path(root)
    return {
        "flux": root / "flux1-dev",
        "infiniteyou": root / "InfiniteYou",
        "stage": root / "InfiniteYou" / "infu_flux_v1.0" / "sim_stage1",
        "arcface": root / "facexlib-arcface" / "recognition_arcface_ir_se50.pth",
    }


def _tokenizers():
    from transformers import CLIPTokenizer, T5TokenizerFast

    alphabet = string.ascii_lowercase + string.digits + ".,'-"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in alphabet:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    clip = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in alphabet] + [("▁" + w, -1.0) for w in _WORDS]
    t5 = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)
    return clip, t5


def make_tiny_infiniteyou(root: str | os.PathLike, seed: int = 0, shard_size: str = "200KB") -> dict[str, Path]:
    """Write tiny random FLUX.1-dev, InfiniteYou (sim_stage1) and IR-SE ArcFace weights.

    Args:
        root: output folder (reused as is when a previous call completed there).
        seed: torch seed of the random weights.
        shard_size: ``max_shard_size`` of the transformer and InfuseNet, small enough to produce
            several shards and an index, as the real checkpoints have.

    Returns:
        :func:`tiny_paths` of ``root``.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxControlNetModel,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from pipelines.generators.arcface_irse import IRSEBackbone
    from pipelines.generators.resampler import IdentityResampler

    paths = tiny_paths(root)
    marker = Path(root) / _MARKER
    if marker.exists():
        return paths
    for p in (paths["flux"], paths["infiniteyou"], paths["arcface"].parent):
        shutil.rmtree(p, ignore_errors=True)
    torch.manual_seed(seed)
    clip_tok, t5_tok = _tokenizers()
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tok), hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=TEXT_DIM,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, decoder_start_token_id=0,
    ))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True, axes_dims_rope=[4, 6, 6],
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=32, use_quant_conv=False,
        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler, text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5,
        tokenizer_2=t5_tok, vae=vae, transformer=transformer,
    )
    pipe.save_pretrained(paths["flux"])
    shutil.rmtree(paths["flux"] / "transformer")
    transformer.save_pretrained(paths["flux"] / "transformer", max_shard_size=shard_size)

    infusenet = FluxControlNetModel.from_transformer(
        transformer, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        load_weights_from_transformer=False,
    )
    # diffusers zero-initialises a fresh ControlNet's output projections (a trained InfuseNet's are
    # not): randomise them so that the identity tokens visibly steer the tiny model's images.
    with torch.no_grad():
        for pname, param in infusenet.named_parameters():
            if pname.startswith(("controlnet_blocks", "controlnet_single_blocks", "controlnet_x_embedder")):
                param.normal_(0.0, 0.2)
    infusenet.save_pretrained(paths["stage"] / "InfuseNetModel", max_shard_size=shard_size)
    resampler = IdentityResampler(
        dim=32, depth=1, dim_head=64, heads=1, num_queries=8, embedding_dim=ID_DIM, output_dim=TEXT_DIM, ff_mult=2
    )
    torch.save({"image_proj": resampler.state_dict()}, paths["stage"] / "image_proj_model.bin")
    arcface = IRSEBackbone(stages=((16, 1), (32, 1), (48, 1), (64, 1)), stem=16, embedding_dim=ID_DIM)
    paths["arcface"].parent.mkdir(parents=True, exist_ok=True)
    torch.save(arcface.state_dict(), paths["arcface"])
    marker.write_text(json.dumps({"seed": seed}))
    return paths


def make_tiny_lora(flux_dir: str | os.PathLike, out_file: str | os.PathLike, rank: int = 4, seed: int = 1) -> Path:
    """A random LoRA for the tiny FLUX transformer, saved as diffusers saves FLUX LoRAs."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel.from_pretrained(Path(flux_dir) / "transformer")
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v"],
                                       init_lora_weights=False))
    out = Path(out_file)
    FluxPipeline.save_lora_weights(
        out.parent, transformer_lora_layers=get_peft_model_state_dict(transformer), weight_name=out.name
    )
    return out


@dataclass
class TinyInfiniteYouGenerator(InfiniteYouGenerator):
    """The InfiniteYou code path on tiny random weights, built offline on first use.

    For smoke tests of the whole pipeline on CPU: 64x64 noise images, 2 steps, the reference
    face found with the embedded dlib detector. Not data, and recorded as ``infiniteyou-tiny``.

    Args:
        weights_dir: where the tiny weights are built (default ``$INSCENE_HOME/tiny-infiniteyou``).
        **kw: see :class:`~.infiniteyou.InfiniteYouGenerator`.
    """

    name: ClassVar[str] = "infiniteyou-tiny"
    version: ClassVar[str] = "tiny-random-1"
    paper: ClassVar[bool] = False

    width: int = 64
    height: int = 64
    steps: int = 2
    lora_specs: tuple[tuple[str, float], ...] = ()
    id_detector: str = "dlib"
    max_sequence_length: int = 64
    weights_dir: str | None = None

    def _root(self) -> Path:
        if self.weights_dir:
            return Path(self.weights_dir).expanduser()
        from inscene.weights import inscene_home

        return inscene_home() / "tiny-infiniteyou"

    def weight_paths(self) -> dict[str, Path]:
        paths = make_tiny_infiniteyou(self._root())
        self.flux_path = self.flux_path or str(paths["flux"])
        self.infiniteyou_path = self.infiniteyou_path or str(paths["stage"])
        self.arcface_path = self.arcface_path or str(paths["arcface"])
        return super().weight_paths()
