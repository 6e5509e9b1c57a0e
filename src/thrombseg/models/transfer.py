"""Transfer layer T of the Logic-LSTM (Vargas-Ibarra et al., MIDL 2024, eq. 12)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _same_maxpool(x: Tensor, ph: int, pw: int) -> Tensor:
    """Stride-1 max pool with a ph x pw window and 'same' output size.

    Separable (rows then columns), which is exact for max and costs O(p) instead of O(p^2) per
    voxel, so whole-slice windows stay cheap. Padding is -inf, so it never wins the max.
    """
    if ph > 1:
        x = F.pad(x, (0, 0, (ph - 1) // 2, ph // 2), value=float("-inf"))
        x = F.max_pool2d(x, (ph, 1), stride=1)
    if pw > 1:
        x = F.pad(x, ((pw - 1) // 2, pw // 2), value=float("-inf"))
        x = F.max_pool2d(x, (1, pw), stride=1)
    return x


class TransferLayer(nn.Module):
    """Multi-scale per-channel max pooling with 'same' output size (no parameters).

    Channels are split into ``k = channels // m`` consecutive groups of ``m``. Group ``i``
    (1-based) is max-pooled per channel with window ``p_i = 2 n / 2**i`` (``n`` = slice height,
    resp. width; clipped to >= 1), stride 1. Group 1 therefore sees (about) the whole slice and later
    groups ever more local neighbourhoods, which moves evidence across the image.

    Args:
        channels: Number of input channels (``k * m``).
        m: Multiplicity, the number of channels per group.
    """

    def __init__(self, channels: int, m: int) -> None:
        super().__init__()
        if m < 1 or channels % m:
            raise ValueError(f"channels ({channels}) must be a positive multiple of m ({m})")
        self.channels, self.m, self.k = channels, m, channels // m

    @staticmethod
    def window(n: int, i: int) -> int:
        """Window ``2 n / 2**i`` for group ``i`` (1-based) on a side of length ``n``."""
        return max(1, min(n, round(2 * n / 2 ** i)))

    def forward(self, x: Tensor) -> Tensor:
        """Pool (N, channels, H, W) -> (N, channels, H, W)."""
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[1]}")
        h, w = x.shape[-2:]
        groups = x.split(self.m, dim=1)
        out = [_same_maxpool(g, self.window(h, i), self.window(w, i))
               for i, g in enumerate(groups, start=1)]
        return torch.cat(out, dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, m={self.m}, k={self.k}"

