"""MapNet: FaDeX degradation code Z_face -> multi-scale degradation tokens for SD-Turbo.

Provenance: Face2Scene (arXiv 2603.16570) §3.2 ("MapNet: Degradation Mapping Network") and §7.2
("Degradation Attention Implementation"); token-scale ablation of Table 6 (§9.3) and the "no
degradation tokens" ablation of Table 3 (§4.3).

Shapes (paper defaults, :class:`inscene.config.RestorerSettings`)::

    Z_face  B x 256 x H' x W'
      -> overlap patch embedding: 3x3 conv, stride 2 (+ LayerNorm)     B x (H'/2 * W'/2) x 512
      -> split channels: F1, F2 (256 each)
      -> DegAttn, 8 heads: q/k from F1 (4 heads) -> A1, q/k from F2 (4 heads) -> A2,
         v from [F1; F2] (2 * d_h per head); Y = (A1 - lambda * A2) V, lambda learnable
      -> RMSNorm, projection back to 256 channels                      B x 256 x H'/2 x W'/2 (Y_ch)
      -> grid average pooling 4x4, 2x2, 1x1; each cell through a small MLP + LayerNorm
      -> 16 + 4 + 1 = 21 tokens                                         B x 21 x 1024

Where the paper is silent (our choices, each a constructor argument):

* one MLP per pooling scale (Linear -> GELU -> Linear, hidden = token width), shared by the cells of
  that scale, then LayerNorm; token order is local (4x4, row-major), intermediate (2x2), global (1x1);
* lambda is a plain learnable scalar initialised at 0.2 (the first-layer value of the Differential
  Transformer's lambda_init, whose "difference of two softmax maps" DegAttn follows);
* no positional embedding is added to the tokens (the paper mentions none).

Each attention branch is computed with :func:`torch.nn.functional.scaled_dot_product_attention`
(``A_i V`` without materialising ``A_i``): ``(A1 - lambda A2) V = A1 V - lambda A2 V``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inscene.errors import BadInputError

__all__ = ["DegAttn", "MapNet", "OverlapPatchEmbed", "TOKEN_SCALES"]

#: Grid sizes whose cells become tokens, per ablation setting (Table 6; 0 = Table 3 "no tokens").
TOKEN_SCALES: dict[int, tuple[int, ...]] = {0: (), 1: (1,), 5: (2, 1), 21: (4, 2, 1)}

#: Smallest Z_face side MapNet accepts: after the stride-2 embedding the 4x4 grid needs 4 cells.
MIN_ZFACE_SIDE = 8


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution with stride 2 followed by LayerNorm over channels (§3.2)."""

    def __init__(self, in_channels: int = 256, out_channels: int = 512) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """``B x C x H x W`` -> (``B x N x C_out`` tokens, H_out, W_out)."""
        x = self.proj(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x), h, w


class DegAttn(nn.Module):
    """Degradation attention (§3.2, §7.2): the difference of two branches' attention maps.

    ``heads`` heads in total: half build queries/keys from F1 (maps A1), half from F2 (maps A2);
    the i-th A1 head and the i-th A2 head share one value head of width ``2 * d_h`` computed from
    the concatenation [F1; F2], with ``d_h = channels / heads``.

    Args:
        channels: width of the embedded sequence (F1 and F2 have half each).
        heads: total heads (even).
        lambda_init: initial value of the learnable scalar lambda.
    """

    def __init__(self, channels: int = 512, heads: int = 8, lambda_init: float = 0.2) -> None:
        super().__init__()
        if heads % 2 or channels % heads or channels % 2:
            raise BadInputError(f"DegAttn needs an even head count dividing the channels, got {heads}/{channels}")
        self.channels = channels
        self.heads = heads
        self.pair_heads = heads // 2
        self.head_dim = channels // heads
        half = channels // 2
        qk_width = self.pair_heads * self.head_dim
        self.qk1 = nn.Linear(half, 2 * qk_width)
        self.qk2 = nn.Linear(half, 2 * qk_width)
        self.v = nn.Linear(channels, self.pair_heads * 2 * self.head_dim)
        self.lambda_ = nn.Parameter(torch.tensor(float(lambda_init)))

    def _split(self, x: torch.Tensor, width: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.pair_heads, width).transpose(1, 2)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """``B x N x channels`` -> ``B x N x channels`` (heads merged, before RMSNorm)."""
        f1, f2 = f.chunk(2, dim=-1)
        q1, k1 = self.qk1(f1).chunk(2, dim=-1)
        q2, k2 = self.qk2(f2).chunk(2, dim=-1)
        v = self._split(self.v(f), 2 * self.head_dim)
        q1, k1, q2, k2 = (self._split(t, self.head_dim) for t in (q1, k1, q2, k2))
        # Softmax scale 1/sqrt(d_h): the maps are d_h-dimensional, the value is 2*d_h wide.
        scale = self.head_dim**-0.5
        a1v = F.scaled_dot_product_attention(q1, k1, v, scale=scale)
        a2v = F.scaled_dot_product_attention(q2, k2, v, scale=scale)
        y = a1v - self.lambda_.to(a1v.dtype) * a2v
        b, _, n, _ = y.shape
        return y.transpose(1, 2).reshape(b, n, self.pair_heads * 2 * self.head_dim)


class _TokenHead(nn.Module):
    """Small MLP + LayerNorm applied to every pooled cell of one scale."""

    def __init__(self, in_dim: int, token_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, token_dim), nn.GELU(), nn.Linear(token_dim, token_dim))
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        return self.norm(self.mlp(cells))


class MapNet(nn.Module):
    """Z_face (``B x in_channels x H' x W'``, H', W' >= 8) -> ``B x num_tokens x token_dim``.

    Args:
        in_channels: FaDeX code channels (256, §7.2).
        channels: patch-embedding width (512, §7.2).
        heads: DegAttn heads (8, §7.2).
        token_dim: output token width = the UNet's cross-attention width (1024 for SD-Turbo).
        num_tokens: 21 (4x4 + 2x2 + 1x1, the paper's), 5 (2x2 + 1x1), 1 (global) or 0 (no
            degradation tokens: the Table 3 ablation; :meth:`forward` returns ``B x 0 x token_dim``).
        lambda_init: initial DegAttn lambda.
    """

    def __init__(
        self,
        in_channels: int = 256,
        channels: int = 512,
        heads: int = 8,
        token_dim: int = 1024,
        num_tokens: int = 21,
        lambda_init: float = 0.2,
    ) -> None:
        super().__init__()
        if num_tokens not in TOKEN_SCALES:
            raise BadInputError(f"num_tokens must be one of {sorted(TOKEN_SCALES)}, got {num_tokens}")
        self.in_channels = in_channels
        self.token_dim = token_dim
        self.num_tokens = num_tokens
        self.scales = TOKEN_SCALES[num_tokens]
        self.embed = OverlapPatchEmbed(in_channels, channels)
        self.attn = DegAttn(channels, heads, lambda_init)
        self.norm = nn.RMSNorm(channels)
        self.proj = nn.Linear(channels, in_channels)
        self.token_heads = nn.ModuleList(_TokenHead(in_channels, token_dim) for _ in self.scales)

    def config(self) -> dict[str, int | float]:
        """Constructor arguments (recorded in checkpoints)."""
        return {
            "in_channels": self.in_channels,
            "channels": self.embed.proj.out_channels,
            "heads": self.attn.heads,
            "token_dim": self.token_dim,
            "num_tokens": self.num_tokens,
        }

    def features(self, z_face: torch.Tensor) -> torch.Tensor:
        """Y_ch: ``B x in_channels x H'/2 x W'/2`` (DegAttn output, RMS-normalised and projected)."""
        if z_face.ndim != 4 or z_face.shape[1] != self.in_channels:
            raise BadInputError(f"Z_face must be B x {self.in_channels} x H x W, got {tuple(z_face.shape)}")
        if min(z_face.shape[-2:]) < MIN_ZFACE_SIDE:
            raise BadInputError(
                f"Z_face is {z_face.shape[-2]}x{z_face.shape[-1]}; MapNet needs at least "
                f"{MIN_ZFACE_SIDE}x{MIN_ZFACE_SIDE} (the 4x4 token grid after the stride-2 embedding, §9.3)"
            )
        f, h, w = self.embed(z_face)
        y = self.proj(self.norm(self.attn(f)))
        return y.transpose(1, 2).reshape(z_face.shape[0], self.in_channels, h, w)

    def forward(self, z_face: torch.Tensor) -> torch.Tensor:
        """The degradation tokens, ``B x num_tokens x token_dim``."""
        if self.num_tokens == 0:
            return z_face.new_zeros(z_face.shape[0], 0, self.token_dim)
        y = self.features(z_face)
        tokens = []
        for grid, head in zip(self.scales, self.token_heads, strict=True):
            cells = F.adaptive_avg_pool2d(y, grid).flatten(2).transpose(1, 2)  # B x grid^2 x C
            tokens.append(head(cells))
        return torch.cat(tokens, dim=1)
