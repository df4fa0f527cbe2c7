"""One-step SD-Turbo (Face2Scene §3.2, §4.1, §7.2) on a tiny model loaded through the real code."""

from __future__ import annotations

import json

import pytest
import torch

from inscene.config import InsceneConfig
from inscene.errors import BadInputError
from restorer.onestep import UNET_LORA_TARGETS, OneStepSD, predict_x0
from tests.restorer.stage2_helpers import TOKEN_DIM, one_thread, tiny_sd

RS = InsceneConfig().restorer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def model() -> OneStepSD:
    torch.manual_seed(0)
    m = OneStepSD.from_pretrained(tiny_sd(), positive_prompt=RS.positive_prompt, negative_prompt=RS.negative_prompt,
                                  vae_lora_rank=4, unet_lora_rank=8)
    # LoRA B starts at zero (gaussian init): give it values so the adapters matter in these tests.
    with torch.no_grad():
        for name, p in m.named_trainable_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return m.eval()


def test_tiny_set_uses_the_sd_turbo_layout():
    folder = tiny_sd()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part, cls in (("unet", "UNet2DConditionModel"), ("vae", "AutoencoderKL"), ("text_encoder", "CLIPTextModel"),
                      ("tokenizer", "CLIPTokenizer"), ("scheduler", "EulerDiscreteScheduler")):
        assert index[part][1] == cls
        assert (folder / part).is_dir()
    assert (folder / "tokenizer" / "vocab.json").is_file() and (folder / "tokenizer" / "merges.txt").is_file()
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_loaded_through_from_pretrained_with_lora_where_s3diff_puts_it(model):
    assert model.cross_attention_dim == TOKEN_DIM and model.timestep == RS.timestep == 999
    assert model.prompt_embeds.shape == (2, 77, TOKEN_DIM)
    assert not torch.equal(model.prompt_embeds[0], model.prompt_embeds[1])  # positive != negative prompt
    names = [n for n, _ in model.named_trainable_parameters()]
    vae = [n for n in names if n.startswith("vae.")]
    unet = [n for n in names if n.startswith("unet.")]
    assert vae and all(n.startswith("vae.encoder.") and "lora_" in n for n in vae)  # encoder only
    assert "unet.conv_in.weight" in names and "unet.conv_in.bias" in names
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in unet if "lora_" in n}
    assert wrapped <= {t.rsplit(".", 1)[-1] for t in UNET_LORA_TARGETS} | {"0", "proj"}
    assert {"to_q", "to_k", "to_v", "conv1", "conv2", "proj_in", "proj_out"} <= wrapped
    ranks = {p.shape[0] for n, p in model.named_trainable_parameters() if "lora_A" in n and n.startswith("unet.")}
    assert ranks == {8}
    assert {p.shape[0] for n, p in model.named_trainable_parameters() if "lora_A" in n and n.startswith("vae.")} == {4}
    assert not any(p.requires_grad for p in model.parameters())  # inference: everything frozen
    model.set_trainable(True)
    try:
        grads = {f"{part}.{n}" for part in ("unet", "vae") for n, p in getattr(model, part).named_parameters()
                 if p.requires_grad}
    finally:
        model.set_trainable(False)
    assert grads == set(names)  # training: exactly LoRA + conv_in, the base stays frozen
    assert model.pad_multiple == 8


def test_x0_is_the_scheduler_steps_prediction(model):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(model.scheduler_config)
    sched.set_timesteps(1)
    assert int(sched.timesteps[0]) == 999
    out, x = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    ref = sched.step(out, 999, x).pred_original_sample
    assert torch.equal(predict_x0(model.scheduler_config, model.alpha_prod_t, out, x), ref)


def test_conditioning_is_text_then_degradation_tokens(model):
    tokens = torch.randn(2, 21, TOKEN_DIM)
    for n in (21, 5, 1, 0):
        cond = model.conditioning(tokens[:, :n], None, 2)
        assert cond.shape == (2, 77 + n, TOKEN_DIM)
        assert torch.equal(cond[:, 77:], tokens[:, :n])
    assert model.conditioning(None, None, 2).shape == (2, 77, TOKEN_DIM)  # "no degradation tokens" (Table 3)
    neg = model.conditioning(tokens, torch.tensor([False, True]), 2)
    assert torch.equal(neg[0, :77], model.prompt_embeds[0]) and torch.equal(neg[1, :77], model.prompt_embeds[1])
    with pytest.raises(BadInputError, match="degradation tokens"):
        model.conditioning(torch.randn(2, 21, TOKEN_DIM + 1), None, 2)


def test_cfg(model):
    torch.manual_seed(1)
    lq = torch.rand(1, 3, 40, 48) * 2 - 1
    tokens = torch.randn(1, 21, TOKEN_DIM)
    with torch.no_grad():
        latents = model.encode(lq)
        pos = model.denoise(latents, tokens)
        neg = model.denoise(latents, tokens, negative=torch.tensor([True]))
        assert torch.equal(model.denoise(latents, tokens, cfg_scale=1.0), pos)  # lambda = 1: positive branch alone
        guided = model.denoise(latents, tokens, cfg_scale=RS.cfg_scale)  # both branches in one batch
    # x0 is affine in the UNet output, so z_neg + lambda (z_pos - z_neg) carries over to x0
    assert torch.allclose(guided, neg + RS.cfg_scale * (pos - neg), atol=1e-4)
    assert not torch.allclose(guided, pos, atol=1e-4)
    with torch.no_grad():
        a = model(lq, tokens, cfg_scale=1.0)
        b = model(lq, tokens)
        c = model(lq, tokens[:, :5])
        d = model(lq, None)
    assert torch.equal(a, b)
    assert not torch.equal(b, c) and not torch.equal(b, d)  # token ablations reach the output


def test_any_size_is_padded_and_cropped_back(model):
    with torch.no_grad():
        for h, w in ((30, 41), (64, 16), (8, 8)):
            out = model(torch.rand(1, 3, h, w) * 2 - 1, torch.randn(1, 21, TOKEN_DIM))
            assert out.shape == (1, 3, h, w) and out.abs().max() <= 1


def test_latent_tiling(model):
    torch.manual_seed(2)
    lq = torch.rand(1, 3, 96, 80) * 2 - 1
    tokens = torch.randn(1, 21, TOKEN_DIM)
    with torch.no_grad():
        latents = model.encode(lq)
        cond = model.conditioning(tokens, None, 1)
        whole = model.unet_output(latents, cond)
        model.latent_tile, model.latent_overlap = 16, 8
        try:
            tiled = model.unet_output(latents, cond)
            model.latent_tile = 32  # not smaller than the 24x20 latent: no tiling
            same = model.unet_output(latents, cond)
        finally:
            model.latent_tile, model.latent_overlap = 128, 32
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    assert torch.equal(same, whole)
    # away from tile borders the blend equals the single evaluation up to the UNet's receptive field
    assert (tiled - whole).abs().mean() < whole.abs().mean()


def test_bad_model_folders_and_settings(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(BadInputError, match="not an SD-Turbo folder"):
        OneStepSD.from_pretrained(tmp_path, positive_prompt="a", negative_prompt="b")
    with pytest.raises(BadInputError, match="latent_tile"):
        OneStepSD.from_pretrained(tiny_sd(), positive_prompt="a", negative_prompt="b", latent_tile=12)


def test_stage2_benchmark_runs_on_the_tiny_architecture(capsys):
    import argparse

    from benchmarks.perf_restorer import run_stage2

    args = argparse.Namespace(arch="tiny", device="cpu", dtype="fp32", size=48, pair=32, repeats=1, train_batch=2,
                              train_size=32, no_train=False)
    ratio, extra = run_stage2(args)
    out = capsys.readouterr().out
    assert ratio > 0 and "cfg_s=" in extra
    assert "Stage II at 48x48" in out and "training step, batch 2 at 32x32" in out
