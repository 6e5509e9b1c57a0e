"""Plain ConvLSTM (Shi et al., 2015) cell and slice-sequence module."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._recurrence import LSTMCellBase, SliceRecurrence


class ConvLSTMCell(LSTMCellBase):
    """ConvLSTM cell with ``A = c || h || x`` (MIDL 2024, eqs. 1-7), one conv for all four gates.

    Args:
        in_channels: Input channels.
        hidden: State channels.
        kernel_size: Gate convolution kernel.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(2 * hidden + in_channels, 4 * hidden, kernel_size,
                              padding=kernel_size // 2)
        with torch.no_grad():  # forget-gate bias 1
            self.conv.bias[:hidden].fill_(1.0)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One step: (N, C, H, W), (h, c) -> (h', c')."""
        h, c = state
        f, i, o, d = self.conv(torch.cat([c, h, x], dim=1)).chunk(4, dim=1)
        return self.update(f, i, o, d, c)


class ConvLSTM(SliceRecurrence):
    """ConvLSTM over the slice axis (double pass, optional bidirectional).

    Shape:
        (B, S, in_channels, H, W) -> (B, S, out_channels, H, W).
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3,
                 double_pass: bool = True, bidirectional: bool = False) -> None:
        super().__init__(lambda: ConvLSTMCell(in_channels, hidden, kernel_size), hidden=hidden,
                         double_pass=double_pass, bidirectional=bidirectional)
