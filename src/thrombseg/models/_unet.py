"""2-D U-Net encoder/decoder shared by UpAttLLSTM and UNet2.5D (private)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._blocks import ConvBlock
from .attention import AttentionGate


class UNetEncoder(nn.Module):
    """Conv blocks at ``len(widths)`` resolutions, 2x max-pooling in between.

    Returns the feature map of every level, finest first.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], n_convs: int = 2) -> None:
        super().__init__()
        chans = [in_channels, *widths]
        self.blocks = nn.ModuleList(ConvBlock(chans[i], chans[i + 1], n_convs)
                                    for i in range(len(widths)))

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for level, block in enumerate(self.blocks):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        return feats


class UNetDecoder(nn.Module):
    """Transposed-conv up path with (optionally attention-gated) skip concatenation.

    Args:
        skip_channels: Channels of the encoder outputs, finest first (the last is the bottom).
        widths: Decoder widths per level, finest first (``widths[-1]`` is unused).
        n_convs: Convs per decoder block.
        gated_skips: Gate each skip with an additive attention gate driven by the up path.
    """

    def __init__(self, skip_channels: Sequence[int], widths: Sequence[int], n_convs: int = 2,
                 gated_skips: bool = True) -> None:
        super().__init__()
        self.ups, self.gates, self.blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = skip_channels[-1]
        for level in range(len(widths) - 2, -1, -1):
            w, s = widths[level], skip_channels[level]
            self.ups.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.gates.append(AttentionGate(s, w) if gated_skips else nn.Identity())
            self.blocks.append(ConvBlock(s + w, w, n_convs))
            c = w

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[-1]
        for i, (up, gate, block) in enumerate(zip(self.ups, self.gates, self.blocks)):
            skip = feats[-2 - i]
            x = up(x)
            skip = gate(skip, x) if isinstance(gate, AttentionGate) else skip
            x = block(torch.cat([skip, x], dim=1))
        return x
