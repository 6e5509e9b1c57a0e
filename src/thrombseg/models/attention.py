"""Attention gates: fusion over the available sequences, and gating of U-Net skips."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class AttentionGateFusion(nn.Module):
    """Fuse per-sequence features with per-location attention over the available sequences.

    Additive attention (Oktay et al., 2018) whose gating signal is the mean of the available
    sequences' features: ``s_m = psi(relu(W_x f_m + W_g g))``. Weights are a softmax of ``s_m``
    over the sequences marked available, i.e. renormalised per sample, so an absent sequence gets
    weight exactly 0 and contributes nothing; a sample with no sequence available fuses to zeros.

    Args:
        channels: Feature channels per sequence.
        inter_channels: Hidden width of the gate (default ``max(channels // 2, 1)``).
    """

    def __init__(self, channels: int, inter_channels: int | None = None) -> None:
        super().__init__()
        inter = inter_channels or max(channels // 2, 1)
        self.w_x = nn.Conv2d(channels, inter, 1)
        self.w_g = nn.Conv2d(channels, inter, 1, bias=False)
        self.psi = nn.Conv2d(inter, 1, 1, bias=False)  # a shared bias cancels in the softmax

    def forward(self, feats: Tensor | Sequence[Tensor],
                available: Tensor) -> tuple[Tensor, Tensor]:
        """Fuse M per-sequence feature maps given bool (N, M) availability.

        Args:
            feats: (N, M, C, H, W), or a sequence of M maps (N, C, H, W) (keeps each map in its
                own memory format, e.g. channels_last).
            available: Bool (N, M).

        Returns:
            Fused features (N, C, H, W) and the weights (N, M, H, W).
        """
        maps = list(feats.unbind(1)) if isinstance(feats, Tensor) else list(feats)
        mask = available.to(torch.bool)
        if mask.shape != (maps[0].shape[0], len(maps)):
            raise ValueError(f"available {tuple(mask.shape)} does not match the features")
        zero = maps[0].new_zeros(())
        # Exact zeros for absent sequences: nothing of them reaches context, scores or output.
        maps = [torch.where(mask[:, j, None, None, None], f, zero) for j, f in enumerate(maps)]
        count = mask.sum(dim=1).clamp_min(1).to(maps[0].dtype)[:, None, None, None]
        gate = self.w_g(sum(maps) / count)
        scores = torch.cat([self.psi(torch.relu(self.w_x(f) + gate)) for f in maps], dim=1)
        # A finite fill (not -inf) keeps the softmax and its gradient NaN-free even when a sample
        # has no available sequence; exp(-1e4) underflows to exactly 0 for the absent ones.
        m4 = mask[:, :, None, None]
        scores = scores.float().masked_fill(~m4, -1e4)
        weights = torch.where(m4, torch.softmax(scores, dim=1), 0.0).to(maps[0].dtype)
        fused = sum(weights[:, j:j + 1] * f for j, f in enumerate(maps))
        return fused, weights


class AttentionGate(nn.Module):
    """Additive attention gate on a U-Net skip connection (Oktay et al., 2018).

    ``alpha = sigmoid(psi(relu(W_x x + W_g g)))`` per location; returns ``alpha * x``. The gating
    signal ``g`` is the decoder feature map already upsampled to the skip's resolution.

    Args:
        skip_channels: Channels of the skip features ``x``.
        gate_channels: Channels of the gating signal ``g``.
        inter_channels: Hidden width (default ``max(skip_channels // 2, 1)``).
    """

    def __init__(self, skip_channels: int, gate_channels: int,
                 inter_channels: int | None = None) -> None:
        super().__init__()
        inter = inter_channels or max(skip_channels // 2, 1)
        self.w_x = nn.Conv2d(skip_channels, inter, 1, bias=False)
        self.w_g = nn.Conv2d(gate_channels, inter, 1)
        self.psi = nn.Conv2d(inter, 1, 1)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """Gate skip features x (N, C, H, W) with g (N, C_g, H, W)."""
        return x * torch.sigmoid(self.psi(torch.relu(self.w_x(x) + self.w_g(g))))
