"""AttLLSTM (Vargas-Ibarra et al., MIDL 2024): CrossViT-style cross-attention then Logic-LSTM."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._blocks import ConfigMixin, batch_to_slices, mask_input, pad_to_multiple, slices_to_batch
from .llstm import LogicLSTM


def _sincos_2d(dim: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Fixed 2-D sine/cosine position code (h*w, dim); parameter-free so any slice size works."""
    q = max(dim // 4, 1)
    freq = 1.0 / (10000 ** (torch.arange(q, device=device, dtype=torch.float32) / q))
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq
    ys = torch.cat([ys.sin(), ys.cos()], 1)[:, None, :].expand(h, w, 2 * q)
    xs = torch.cat([xs.sin(), xs.cos()], 1)[None, :, :].expand(h, w, 2 * q)
    pe = torch.cat([ys, xs], dim=-1).reshape(h * w, 4 * q)
    return F.pad(pe, (0, dim - 4 * q)).to(dtype)


class CrossAttention(nn.Module):
    """Scaled dot-product cross-attention block with post-norm residuals.

    Queries/keys/values are LayerNorm + linear projections of their token sets; then
    ``z = LN(q + Attn)`` and ``out = LN(z + MLP(z))`` (the usual Transformer encoder layout the
    paper describes).

    Args:
        dim: Token width.
        n_heads: Attention heads.
        mlp_ratio: MLP hidden width / dim.
    """

    def __init__(self, dim: int, n_heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q_tokens: Tensor, kv_tokens: Tensor) -> Tensor:
        """(N, Tq, D) queries attend to (N, Tk, D) keys/values -> (N, Tq, D)."""
        n, tq, d = q_tokens.shape
        hd = d // self.n_heads
        q = self.to_q(self.norm_q(q_tokens)).view(n, tq, self.n_heads, hd).transpose(1, 2)
        k, v = self.to_kv(self.norm_kv(kv_tokens)).view(n, -1, 2, self.n_heads, hd).unbind(2)
        # SDPA picks a memory-efficient kernel: full attention maps of 4096 tokens per slice
        # would not fit otherwise.
        att = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))
        z = self.norm1(q_tokens + self.proj(att.transpose(1, 2).reshape(n, tq, d)))
        return self.norm2(z + self.mlp(z))


class AttLLSTM(ConfigMixin, nn.Module):
    """Per-slice cross-attention (DWI queries over susceptibility keys/values) -> LLSTM -> 1x1.

    Per slice: patch-embed the query sequences (patch ``p1``) and the concatenated key/value
    sequences (patch ``p2``); the embedding on the coarser grid is resampled (bilinear) to the
    finer one; fixed sin/cos positions are added; one cross-attention block; the tokens are
    projected back to ``image_channels`` x patch x patch pixels (un-patchify), then a 7x7 conv with
    as many output as input channels and ELU. A full-resolution Logic-LSTM runs across slices and a
    1x1 conv gives the logits. Absent sequences are zeroed at the input.

    Args:
        n_modalities: Number of input sequences M.
        n_classes: Output classes K.
        query_modalities: Indices of the query (diffusion) sequences; default ``(0,)``.
        kv_modalities: Indices of the key/value (susceptibility) sequences; default all others
            (the query ones when M == 1).
        p1, p2: Patch sizes of the query and key/value embeddings.
        embed_dim: Token width.
        n_heads: Attention heads.
        mlp_ratio: Transformer MLP width ratio.
        image_channels: Channels of the re-imaged attention output (LLSTM input).
        n_c, n_l, n_t, m, kernel_size: Logic-LSTM sizes.
        double_pass, bidirectional: Logic-LSTM options.
    """

    def __init__(self, n_modalities: int = 4, n_classes: int = 2,
                 query_modalities: Sequence[int] = (0,),
                 kv_modalities: Sequence[int] | None = None, p1: int = 4, p2: int = 8,
                 embed_dim: int = 32, n_heads: int = 4, mlp_ratio: float = 2.0,
                 image_channels: int = 8, n_c: int = 4, n_l: int = 8, n_t: int | None = None,
                 m: int | None = None, kernel_size: int = 3, double_pass: bool = True,
                 bidirectional: bool = False) -> None:
        super().__init__()
        self._store_config(locals())
        self.n_modalities, self.n_classes = n_modalities, n_classes
        self.q_idx = [i % n_modalities for i in query_modalities]
        if kv_modalities is None:
            kv_modalities = [i for i in range(n_modalities) if i not in self.q_idx] or self.q_idx
        self.kv_idx = [i % n_modalities for i in kv_modalities]
        self.p1, self.p2 = p1, p2
        self.patch = min(p1, p2)
        self.multiple = p1 * p2 // math.gcd(p1, p2)
        self.embed_q = nn.Conv2d(len(self.q_idx), embed_dim, p1, stride=p1)
        self.embed_kv = nn.Conv2d(len(self.kv_idx), embed_dim, p2, stride=p2)
        self.attention = CrossAttention(embed_dim, n_heads, mlp_ratio)
        self.unpatch = nn.Linear(embed_dim, image_channels * self.patch ** 2)
        self.conv = nn.Sequential(nn.Conv2d(image_channels, image_channels, 7, padding=3),
                                  nn.ELU(inplace=True))
        self.llstm = LogicLSTM(image_channels, n_c, n_l, kernel_size, n_t=n_t, m=m,
                               double_pass=double_pass, bidirectional=bidirectional)
        self.head = nn.Conv2d(self.llstm.out_channels, n_classes, 1)

    def forward(self, x: Tensor, available: Tensor | None = None) -> Tensor:
        """Segment (B, M, S, H, W) given availability (B, M) -> logits (B, K, S, H, W)."""
        x, _ = mask_input(x, available, self.n_modalities)
        b, s = x.shape[0], x.shape[2]
        z, (h, w) = pad_to_multiple(slices_to_batch(x), self.multiple)
        hp, wp = z.shape[-2:]
        eq = self.embed_q(z[:, self.q_idx])
        ekv = self.embed_kv(z[:, self.kv_idx])
        gh, gw = hp // self.patch, wp // self.patch
        if eq.shape[-2:] != (gh, gw):
            eq = F.interpolate(eq, size=(gh, gw), mode="bilinear", align_corners=False)
        if ekv.shape[-2:] != (gh, gw):
            ekv = F.interpolate(ekv, size=(gh, gw), mode="bilinear", align_corners=False)
        pos = _sincos_2d(eq.shape[1], gh, gw, eq.device, eq.dtype)
        tq = eq.flatten(2).transpose(1, 2) + pos
        tkv = ekv.flatten(2).transpose(1, 2) + pos
        tokens = self.unpatch(self.attention(tq, tkv))                  # (N, gh*gw, C*p*p)
        img = F.pixel_shuffle(tokens.transpose(1, 2).reshape(z.shape[0], -1, gh, gw), self.patch)
        img = self.conv(img)
        feats = self.llstm(img.view(b, s, *img.shape[1:])).flatten(0, 1)
        logits = self.head(feats)[..., :h, :w]
        return batch_to_slices(logits, b)
