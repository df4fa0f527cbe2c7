"""MapNet (Face2Scene §3.2, §7.2): shapes, the paper's defaults, DegAttn's formula, token ablations."""

from __future__ import annotations

import pytest
import torch

from inscene.config import InsceneConfig
from inscene.errors import BadInputError
from restorer.mapnet import TOKEN_SCALES, DegAttn, MapNet
from tests.restorer.stage2_helpers import one_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


def test_paper_defaults_build_the_documented_shapes():
    rs = InsceneConfig().restorer
    m = MapNet(rs.fadex_channels, rs.mapnet_channels, rs.mapnet_heads, rs.token_dim, rs.num_tokens)
    conv = m.embed.proj
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (256, 512, (3, 3), (2, 2))
    assert m.embed.norm.normalized_shape == (512,)
    assert (m.attn.heads, m.attn.pair_heads, m.attn.head_dim) == (8, 4, 64)
    # queries/keys of each branch come from its 256-channel half; values from [F1; F2] (2 * d_h per head)
    assert m.attn.qk1.in_features == m.attn.qk2.in_features == 256
    assert m.attn.v.in_features == 512 and m.attn.v.out_features == 4 * 2 * 64
    assert isinstance(m.norm, torch.nn.RMSNorm) and m.proj.out_features == 256
    assert m.attn.lambda_.requires_grad and m.attn.lambda_.ndim == 0
    with torch.no_grad():
        tokens = m(torch.randn(2, 256, 8, 8))
    assert tokens.shape == (2, 21, 1024)


@pytest.mark.parametrize("size", [(8, 8), (9, 13), (33, 20)])
def test_21_tokens_of_the_cross_attention_width_from_any_size(size):
    torch.manual_seed(0)
    m = MapNet(in_channels=16, channels=32, heads=8, token_dim=24)
    tokens = m(torch.randn(3, 16, *size))
    assert tokens.shape == (3, 21, 24)
    assert torch.isfinite(tokens).all()


def test_token_order_local_intermediate_global():
    torch.manual_seed(0)
    m = MapNet(in_channels=16, channels=32, heads=8, token_dim=24).eval()
    z = torch.randn(1, 16, 16, 16)
    with torch.no_grad():
        tokens, y = m(z), m.features(z)
        first_cell = m.token_heads[0](y[:, :, :2, :2].mean(dim=(2, 3))[:, None])  # 8x8 map -> 4x4 grid
        last_mid = m.token_heads[1](y[:, :, 4:, 4:].mean(dim=(2, 3))[:, None])  # -> 2x2 grid, row-major
        glob = m.token_heads[2](y.mean(dim=(2, 3))[:, None])
    assert y.shape == (1, 16, 8, 8)
    assert torch.allclose(tokens[:, :1], first_cell, atol=1e-5)
    assert torch.allclose(tokens[:, 19:20], last_mid, atol=1e-5)
    assert torch.allclose(tokens[:, 20:], glob, atol=1e-5)


@pytest.mark.parametrize("n", sorted(TOKEN_SCALES))
def test_token_ablations(n):
    m = MapNet(in_channels=16, channels=32, heads=8, token_dim=24, num_tokens=n)
    assert m(torch.randn(2, 16, 8, 8)).shape == (2, n, 24)
    assert len(m.token_heads) == len(TOKEN_SCALES[n])


def test_degattn_is_the_difference_of_two_softmax_maps_over_shared_values():
    torch.manual_seed(0)
    att = DegAttn(channels=32, heads=8, lambda_init=0.3)
    f = torch.randn(2, 10, 32)
    out = att(f)
    f1, f2 = f[..., :16], f[..., 16:]
    q1, k1 = att.qk1(f1).chunk(2, -1)
    q2, k2 = att.qk2(f2).chunk(2, -1)
    v = att.v(f)
    d = att.head_dim
    heads = []
    for h in range(att.pair_heads):
        s = slice(h * d, (h + 1) * d)
        a1 = torch.softmax(q1[..., s] @ k1[..., s].transpose(1, 2) / d**0.5, -1)
        a2 = torch.softmax(q2[..., s] @ k2[..., s].transpose(1, 2) / d**0.5, -1)
        heads.append((a1 - 0.3 * a2) @ v[..., h * 2 * d:(h + 1) * 2 * d])
    assert torch.allclose(out, torch.cat(heads, -1), atol=1e-5)
    out.sum().backward()
    assert att.lambda_.grad is not None and att.lambda_.grad.abs() > 0


def test_bad_inputs_are_one_clear_error():
    m = MapNet(in_channels=16, channels=32, heads=8, token_dim=24)
    with pytest.raises(BadInputError, match="at least 8x8"):
        m(torch.randn(1, 16, 7, 12))
    with pytest.raises(BadInputError, match="B x 16 x H x W"):
        m(torch.randn(1, 8, 8, 8))
    with pytest.raises(BadInputError, match="num_tokens"):
        MapNet(num_tokens=4)
    with pytest.raises(BadInputError, match="even head count"):
        DegAttn(channels=30, heads=7)
