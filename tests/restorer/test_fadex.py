"""FaDeX model (§3.2, §7.1, §7.2), Eq. 1, the MoCo queue and momentum encoder."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from inscene.errors import BadInputError
from restorer.fadex import FaDeX, FadexConfig, pair_tensor
from restorer.train_fadex import (
    LabelBatchSampler,
    LabelQueue,
    contrastive_step,
    momentum_update,
    supcon_loss,
)

SMALL = FadexConfig(widths=(8, 16, 256), strides=(1, 2, 1), proj_hidden=32, proj_dim=16)


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (64, 64), (100, 37)])
def test_any_size_from_16px_gives_256_channels_and_unit_q(hw):
    torch.manual_seed(0)
    model = FaDeX(SMALL).eval()
    out = model.encode(torch.rand(3, 6, *hw))
    assert out.z_face.shape == (3, 256, math.ceil(hw[0] / 2), math.ceil(hw[1] / 2))
    assert out.z.shape == (3, 256)
    assert torch.allclose(out.q.norm(dim=1), torch.ones(3), atol=1e-5)


def test_default_config_is_the_papers_shape():
    cfg = FadexConfig()
    assert cfg.channels == 256 and cfg.in_channels == 6 and cfg.total_stride == 2
    kinds = {type(m).__name__ for m in FaDeX(cfg).encoder.modules()}
    assert {"Conv2d", "BatchNorm2d", "LeakyReLU"} <= kinds
    head = [type(m).__name__ for m in FaDeX(cfg).head]
    assert head == ["Linear", "LeakyReLU", "Linear"]


def test_bad_inputs():
    model = FaDeX(SMALL)
    with pytest.raises(BadInputError, match="at least 16x16"):
        model.encode(torch.rand(1, 6, 15, 40))
    with pytest.raises(BadInputError, match=r"\(B, 6, H, W\)"):
        model.encode(torch.rand(1, 3, 32, 32))
    with pytest.raises(BadInputError, match="in_channels must be 6"):
        FadexConfig(in_channels=3)
    with pytest.raises(BadInputError, match="same length"):
        FadexConfig(widths=(8, 256), strides=(1,))
    with pytest.raises(BadInputError, match="equal"):
        pair_tensor(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))


def test_checkpoint_round_trip_in_eval_mode(tmp_path):
    torch.manual_seed(1)
    model = FaDeX(SMALL)
    model.train()
    model(torch.rand(4, 6, 32, 32))  # move the BN running statistics
    model.save_pretrained(tmp_path / "ck")
    assert json.loads((tmp_path / "ck" / "fadex_config.json").read_text())["widths"] == [8, 16, 256]
    loaded = FaDeX.from_pretrained(tmp_path / "ck")
    assert not loaded.training
    assert all(not m.training for m in loaded.modules())
    x = torch.rand(2, 6, 40, 40)
    model.eval()
    assert torch.allclose(loaded.encode(x).z_face, model.encode(x).z_face, atol=1e-6)
    # BatchNorm in eval mode: a sample's code does not depend on the rest of the batch
    assert torch.allclose(loaded.encode(x[:1]).q, loaded.encode(x).q[:1], atol=1e-6)
    # weights from another architecture are refused with a clear error
    other = FaDeX(FadexConfig(widths=(8, 256), strides=(1, 2), proj_hidden=32, proj_dim=16))
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "fadex_config.json").write_text(json.dumps(SMALL.to_dict()))
    with pytest.raises(BadInputError, match="do not match"):
        FaDeX.from_pretrained(tmp_path / "other")
    with pytest.raises(BadInputError, match="no FaDeX weights"):
        FaDeX.from_pretrained(tmp_path / "missing")


def _eq1_reference(q, ql, k, kl, tau, self_mask):
    """Eq. 1 term by term, in float64 loops."""
    q, k = q.double().numpy(), k.double().numpy()
    total, n = 0.0, 0
    for i in range(q.shape[0]):
        cands = [a for a in range(k.shape[0]) if not self_mask[i, a]]
        denom = sum(math.exp(float(q[i] @ k[a]) / tau) for a in cands)
        for p in cands:
            if int(kl[p]) == int(ql[i]):
                total += -math.log(math.exp(float(q[i] @ k[p]) / tau) / denom)
                n += 1
    return total, n


@pytest.mark.parametrize("with_queue", [False, True])
def test_eq1_matches_a_direct_slow_computation(with_queue):
    g = torch.Generator().manual_seed(3)
    q = torch.nn.functional.normalize(torch.randn(8, 5, generator=g), dim=1)
    ql = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    if with_queue:  # keys = the batch itself (self excluded) + a queue holding some same labels
        queue = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=1)
        k, kl = torch.cat([q, queue]), torch.cat([ql, torch.tensor([1, 4, 4, 0, 5, 2])])
    else:  # Eq. 1 exactly as written: the batch against itself
        k, kl = q, ql
    mask = torch.zeros(8, k.shape[0], dtype=torch.bool)
    mask[torch.arange(8), torch.arange(8)] = True
    loss_sum, stats = supcon_loss(q, ql, k, kl, 0.2, self_mask=mask, reduction="sum")
    loss_mean, _ = supcon_loss(q, ql, k, kl, 0.2, self_mask=mask, reduction="mean")
    ref, n = _eq1_reference(q, ql, k, kl, 0.2, mask.numpy())
    assert stats["terms"] == n
    assert float(loss_sum) == pytest.approx(ref, rel=1e-5)
    assert float(loss_mean) == pytest.approx(ref / n, rel=1e-5)


def test_queue_is_fifo_with_its_size():
    queue = LabelQueue(5, 2)
    assert queue.contents()[0].shape == (0, 2)
    for start in (0, 3, 6):
        vals = torch.arange(start, start + 3, dtype=torch.float32)
        queue.enqueue(torch.stack([vals, vals], 1), vals.long())
    keys, labels = queue.contents()
    assert labels.tolist() == [4, 5, 6, 7, 8]  # the 5 newest, oldest first
    assert keys[:, 0].tolist() == [4, 5, 6, 7, 8]
    queue.enqueue(torch.zeros(9, 2), torch.arange(100, 109))  # more than the size: keep the newest 5
    assert queue.contents()[1].tolist() == [104, 105, 106, 107, 108]
    assert int(queue.count) == 5 and queue.keys.shape == (5, 2)


def test_momentum_encoder_gets_no_gradient_and_follows_by_ema():
    torch.manual_seed(0)
    model = FaDeX(SMALL)
    key_model = copy.deepcopy(model)
    for p in key_model.parameters():
        p.requires_grad_(False)
    queue = LabelQueue(16, SMALL.proj_dim)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, labels = torch.rand(6, 6, 24, 24), torch.tensor([0, 0, 0, 1, 1, 1])
    before = [p.clone() for p in key_model.parameters()]
    loss, stats, k_all, lab_all = contrastive_step(model, key_model, queue, x, labels, 0.1)
    assert stats["terms"] == 12  # 2 labels x 3 views: 2 positives per query
    loss.backward()
    assert all(p.grad is None for p in key_model.parameters())
    assert not k_all.requires_grad
    opt.step()
    momentum_update(key_model, model, 0.9)
    for b, pk, pq in zip(before, key_model.parameters(), model.parameters(), strict=True):
        assert torch.allclose(pk, 0.9 * b + 0.1 * pq.detach(), atol=1e-6)
    queue.enqueue(k_all, lab_all)
    assert int(queue.count) == 6


def test_label_batches_hold_positives():
    labels = np.array([5, 5, 5, 7, 7, 9, 11, 11, 11, 11, 13, 13])  # 9 appears once: no positive
    sampler = LabelBatchSampler(labels, batch_size=8, views=4, seed=0)
    assert len(sampler.groups) == 4 and len(sampler) == 2
    seen = set()
    for batch in sampler:
        assert len(batch) == 8
        labs = [int(labels[i]) for i, _ in batch]
        assert all(labs.count(v) == 4 for v in set(labs)) and 9 not in labs
        seen.update(labs)
    assert seen == {5, 7, 11, 13}
    sampler.start_epoch(0, skip=1)
    assert len(list(sampler)) == 1
    with pytest.raises(BadInputError, match="multiple of views"):
        LabelBatchSampler(labels, batch_size=10, views=4)
    with pytest.raises(BadInputError, match="--share"):
        LabelBatchSampler(np.array([1, 2, 3]), batch_size=4, views=2)


def test_operator_batching_puts_one_images_operators_together():
    # 3 operator images x 2 operators x 2 pairs each (own + shared)
    labels = np.repeat(np.arange(6), 2)
    operators = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    sampler = LabelBatchSampler(labels, batch_size=4, views=2, seed=1, operators=operators)
    for epoch in range(3):
        sampler.start_epoch(epoch)
        for batch in sampler:
            ops = {operators[i] for i, _ in batch}
            assert len(ops) == 1  # both labels of the batch are one image's operators


def test_residual_init_makes_half_the_first_filters_see_lq_minus_hq():
    model = FaDeX(SMALL)
    conv = model.encoder[0][0]
    half = conv.weight.shape[0] // 2
    assert torch.equal(conv.weight[:half, 3:], -conv.weight[:half, :3])
    hq = torch.rand(1, 3, 20, 20) * 2 - 1
    out = conv(torch.cat([hq, hq], 1))  # x_LQ == x_HQ: the residual filters see nothing
    assert out[:, :half].abs().max() < 1e-5 and out[:, half:].abs().max() > 0.01
    plain = FaDeX(FadexConfig(residual_init=False)).encoder[0][0].weight
    assert not torch.equal(plain[:1, 3:], -plain[:1, :3])
