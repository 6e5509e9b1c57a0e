"""Transfer layer T of the Logic-LSTM (Vargas-Ibarra et al., MIDL 2024, eq. 12)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _window_max(x: Tensor, p: int, dim: int) -> Tensor:
    """Stride-1 max over windows of ``p`` along ``dim`` with 'same' output length.

    Uses doubling (max of maxes over 1, 2, 4, ... elements, the last two windows overlapping),
    i.e. O(log p) elementwise maxima per voxel instead of the O(p) of ``max_pool2d``, so windows
    as large as the whole slice stay cheap. Padding is -inf, so it never wins the max.
    """
    if p <= 1:
        return x
    n = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [(p - 1) // 2, p // 2]
    y = F.pad(x, pad, value=float("-inf"))
    k = 1
    while 2 * k <= p:  # invariant: y[i] = max(x_pad[i : i + k])
        length = y.shape[dim] - k
        y = torch.maximum(y.narrow(dim, 0, length), y.narrow(dim, k, length))
        k *= 2
    if k < p:
        return torch.maximum(y.narrow(dim, 0, n), y.narrow(dim, p - k, n))
    return y.narrow(dim, 0, n)


def _same_maxpool(x: Tensor, ph: int, pw: int) -> Tensor:
    """Separable (exact for max) stride-1 ph x pw max pooling, 'same' output size."""
    return _window_max(_window_max(x, ph, -2), pw, -1)


class TransferLayer(nn.Module):
    """Multi-scale per-channel max pooling with 'same' output size (no parameters).

    Channels are split into ``k = channels // m`` consecutive groups of ``m``. Group ``i``
    (1-based) is max-pooled per channel with window ``p_i = 2 n / 2**i`` (``n`` = slice height,
    resp. width; clipped to >= 1), stride 1. Group 1 therefore sees (about) the whole slice and
    later groups ever more local neighbourhoods, which moves evidence across the image.

    Args:
        channels: Number of input channels (``k * m``).
        m: Multiplicity, the number of channels per group.
        size: ``(n_h, n_w)`` the windows are sized for, fixed (the training crop at this layer's
            scale), so that a whole slice at inference is pooled with the windows the network
            learned; ``None``: each input's own size (eq. 12 read literally).
    """

    def __init__(self, channels: int, m: int, size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if m < 1 or channels % m:
            raise ValueError(f"channels ({channels}) must be a positive multiple of m ({m})")
        self.channels, self.m, self.k = channels, m, channels // m
        self.size = None if size is None else (int(size[0]), int(size[1]))

    @staticmethod
    def window(n: int, i: int) -> int:
        """Window ``2 n / 2**i`` for group ``i`` (1-based) on a side of length ``n``."""
        return max(1, min(n, round(2 * n / 2 ** i)))

    def forward(self, x: Tensor) -> Tensor:
        """Pool (N, channels, H, W) -> (N, channels, H, W)."""
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[1]}")
        h, w = self.size or x.shape[-2:]
        groups = x.split(self.m, dim=1)
        out = [_same_maxpool(g, self.window(h, i), self.window(w, i))
               for i, g in enumerate(groups, start=1)]
        return torch.cat(out, dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, m={self.m}, k={self.k}, size={self.size}"



def scaled_size(size: int | Sequence[int] | None, factor: int) -> tuple[int, int] | None:
    """``size`` (one int or (H, W), input pixels) at a feature map downsampled ``factor`` times."""
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else size
    return max(1, int(h) // factor), max(1, int(w) // factor)
