"""The identity projection of InfiniteYou: a Perceiver resampler from an ArcFace embedding to tokens.

Provenance: InfiniteYou (Jiang et al., ICCV 2025), used by Face2Scene §6.1 to generate the synthetic
InScene scenes. InfiniteYou projects the 512-D ArcFace embedding of the reference face to 8 tokens
of width 4096 (FLUX's text width) with an IP-Adapter-style Perceiver resampler (width 1280, depth 4,
20 heads of 64, feed-forward x4) and feeds them to InfuseNet in place of the text tokens. Its
weights ship as ``image_proj_model.bin`` (a torch pickle ``{"image_proj": state_dict}``), read here
with ``torch.load(..., weights_only=True)`` only. Parameter names follow that checkpoint so it
loads strictly; the hyper-parameters are read from the checkpoint's shapes
(:meth:`IdentityResampler.from_state_dict`), so tiny test checkpoints use the same code.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from inscene.errors import InsceneError

#: InfiniteYou's configuration (its pipeline constructs the resampler with these values).
INFINITEYOU_RESAMPLER = {
    "dim": 1280, "depth": 4, "dim_head": 64, "heads": 20, "num_queries": 8,
    "embedding_dim": 512, "output_dim": 4096, "ff_mult": 4,
}


class PerceiverAttention(nn.Module):
    """Latents attend to the concatenation of the inputs and themselves."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        q = self._heads(self.to_q(latents))
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        # softmax in float32, as the checkpoint's training code computes it
        attn = (q.float() @ self._heads(k).float().transpose(-2, -1)) * self.dim_head**-0.5
        out = attn.softmax(dim=-1).to(q.dtype) @ self._heads(v)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


def _feed_forward(dim: int, mult: float) -> nn.Sequential:
    inner = int(dim * mult)
    # indices 0,1,3 carry parameters, as in the checkpoint (LayerNorm, Linear, GELU, Linear)
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False)
    )


class IdentityResampler(nn.Module):
    """ArcFace embedding ``(B, N, embedding_dim)`` -> identity tokens ``(B, num_queries, output_dim)``.

    Args:
        dim: width of the latent queries.
        depth: attention + feed-forward layers.
        dim_head: width of one attention head.
        heads: attention heads.
        num_queries: output tokens.
        embedding_dim: input embedding width (512 for ArcFace).
        output_dim: token width (the ControlNet's ``joint_attention_dim``, 4096 for FLUX).
        ff_mult: feed-forward expansion.
    """

    def __init__(
        self,
        dim: int = 1280,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 20,
        num_queries: int = 8,
        embedding_dim: int = 512,
        output_dim: int = 4096,
        ff_mult: float = 4,
    ) -> None:
        super().__init__()
        self.config = {
            "dim": dim, "depth": depth, "dim_head": dim_head, "heads": heads, "num_queries": num_queries,
            "embedding_dim": embedding_dim, "output_dim": output_dim, "ff_mult": ff_mult,
        }
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)]) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project embeddings to tokens."""
        if x.ndim == 2:
            x = x[:, None, :]
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], dim_head: int = 64) -> IdentityResampler:
        """Build a resampler shaped like ``state`` and load it strictly.

        ``heads`` is the attention width over ``dim_head`` (InfiniteYou: 1280 / 64 = 20).
        """
        try:
            _, num_queries, dim = state["latents"].shape
            embedding_dim = state["proj_in.weight"].shape[1]
            output_dim = state["proj_out.weight"].shape[0]
            depth = len({k.split(".")[1] for k in state if k.startswith("layers.")})
            inner = state["layers.0.0.to_q.weight"].shape[0]
            ff_mult = state["layers.0.1.1.weight"].shape[0] / dim
        except (KeyError, ValueError, AttributeError) as exc:
            raise InsceneError(f"not an identity-resampler state dict (missing or odd {exc})") from None
        if inner % dim_head:
            raise InsceneError(f"resampler attention width {inner} is not a multiple of dim_head {dim_head}")
        model = cls(dim, depth, dim_head, inner // dim_head, num_queries, embedding_dim, output_dim, ff_mult)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InsceneError(
                f"resampler checkpoint does not match: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        return model.eval()


def load_image_proj(path: str | os.PathLike, dim_head: int = 64) -> IdentityResampler:
    """Load InfiniteYou's ``image_proj_model.bin`` (``{"image_proj": state_dict}``) safely.

    Raises:
        InsceneError: the file is not a tensors-only checkpoint with an ``image_proj`` entry.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        raise InsceneError(
            f"cannot read {path} as a tensors-only torch checkpoint: {type(exc).__name__}: {exc}"
        ) from None
    state = blob.get("image_proj") if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise InsceneError(f"{path}: expected a dict with an 'image_proj' state dict (InfiniteYou's layout)")
    return IdentityResampler.from_state_dict(state, dim_head=dim_head)

