"""Restorer losses (Face2Scene §3.3): DINO multi-level discriminator, LPIPS, weights lookup."""

from __future__ import annotations

import pytest
import torch

from inscene.errors import MissingWeightsError
from restorer.losses import DinoDiscriminator, LPIPSLoss, create_dino_backbone, diff_augment
from tests.restorer.stage2_helpers import one_thread

TINY_VIT = {"embed_dim": 32, "depth": 4, "num_heads": 2, "img_size": 32}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(autouse=True)
def _no_weights(tmp_path, monkeypatch):
    # an empty inscene home and caches: the real lookups must report what is missing
    monkeypatch.setenv("INSCENE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_discriminator_heads_on_several_levels_of_a_frozen_dino():
    torch.manual_seed(0)
    backbone = create_dino_backbone(pretrained=False, **TINY_VIT)
    d = DinoDiscriminator(backbone)
    assert d.levels == [1, 2]  # 5/12 and 9/12 of the depth (blocks 5 and 9 of ViT-B/16), 0-based
    assert all(not p.requires_grad for p in d.backbone.parameters())
    heads = d.head_parameters()
    assert heads and all(p.requires_grad for p in heads)
    d.train()
    assert not d.backbone.training  # the backbone stays in eval mode
    x = (torch.rand(3, 3, 48, 40) * 2 - 1).requires_grad_(True)
    logits = d(x)
    assert len(logits) == 3
    assert logits[0].shape == (3, 1, 1, 1) and logits[-1].shape == (3, 1)  # patch maps, class token
    g = d.loss(logits, real=True)
    g.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the generator gets gradients through D
    assert all(p.grad is None for p in d.backbone.parameters())
    real, fake = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    ld = d.discriminator_loss(real, fake)
    assert ld.ndim == 0 and torch.isfinite(ld)
    # the real label is smoothed (0.8, S3Diff's multilevel_sigmoid_s): its minimum is not zero
    big = [torch.full_like(lg, 1.386) for lg in logits]  # logit(0.8)
    assert d.loss(big, True).item() == pytest.approx(3 * 0.5004, abs=1e-3)


def test_diff_augment_keeps_shape_and_gradients():
    x = (torch.rand(2, 3, 16, 24) * 2 - 1).requires_grad_(True)
    y = diff_augment(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None
    assert not torch.equal(y, x)


def test_lpips_random_init_architecture_is_vgg_and_frozen():
    loss = LPIPSLoss(pretrained=False)
    assert loss.net.pnet_type == "vgg" and all(not p.requires_grad for p in loss.parameters())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == 0.0


def test_missing_weights_are_one_line_naming_the_file_and_the_fetch_command():
    with pytest.raises(MissingWeightsError, match=r"dino-vitb16.*model\.safetensors.*weights fetch dino-vitb16"):
        create_dino_backbone(pretrained=True)
    with pytest.raises(MissingWeightsError, match=r"lpips-vgg.*LPIPS_v0\.1_vgg.*inscene weights fetch lpips-vgg"):
        LPIPSLoss(pretrained=True)


@pytest.mark.slow
def test_dino_weights_load_from_where_the_weights_table_looks(tmp_path):
    """The pretrained path on a full-size ViT-B/16 state saved as timm's safetensors (random values)."""
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    folder = tmp_path / "home" / "dino-vitb16"  # $INSCENE_HOME/<name>, one of the places looked in
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(folder / "model.safetensors"))
    backbone = create_dino_backbone(pretrained=True)
    loaded = backbone.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in ref.state_dict().items())
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
