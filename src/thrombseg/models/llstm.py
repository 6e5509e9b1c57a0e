"""Logic-LSTM (LLSTM) cell and slice-sequence module (Vargas-Ibarra et al., MIDL 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._recurrence import LSTMCellBase, SliceRecurrence
from .logic import LogicOperation


class LogicLSTMCell(LSTMCellBase):
    """ConvLSTM cell (Shi et al. 2015, eqs. 1-7) whose gate convolutions are Logic operations.

    ``A = c || h || x``; ``f, i, o = sigmoid(Logic(A))``, ``d = tanh(Logic(A))``;
    ``c' = f * c + i * d``; ``h' = o * tanh(c')``. States have ``n_c + n_l`` channels.

    Args:
        in_channels: Input channels.
        n_c: Convolution-part state channels.
        n_l: Logic-part state channels.
        kernel_size: Kernel ``w`` of the w x w convolutions.
        n_t: Transfer-layer channels (default ``n_l``).
        m: Transfer-layer multiplicity (default ``n_t // 4``).
        transfer_size: Slice size the transfer windows are sized for (None: each input's own).
    """

    def __init__(self, in_channels: int, n_c: int, n_l: int, kernel_size: int = 3,
                 n_t: int | None = None, m: int | None = None,
                 transfer_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.hidden = n_c + n_l
        self.logic = LogicOperation(in_channels, n_c, n_l, kernel_size, n_t=n_t, m=m, n_gates=4,
                                    transfer_size=transfer_size)
        with torch.no_grad():  # forget-gate bias 1: remember by default early in training
            self.logic.conv_ac.bias.view(4, -1)[0, :n_c].fill_(1.0)
            self.logic.conv_t.bias.view(4, -1)[0].fill_(1.0)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One step: (N, C, H, W), (h, c) -> (h', c')."""
        h, c = state
        f, i, o, d = self.logic(x, c, h).unbind(dim=1)
        return self.update(f, i, o, d, c)


class LogicLSTM(SliceRecurrence):
    """Logic-LSTM over the slice axis, with double pass and optional bidirectionality.

    Args:
        in_channels, n_c, n_l, kernel_size, n_t, m, transfer_size: As :class:`LogicLSTMCell`.
        double_pass: First pass builds the memory, second predicts.
        bidirectional: Add a reverse-order cell; outputs are concatenated (2 (n_c + n_l) channels).

    Shape:
        (B, S, in_channels, H, W) -> (B, S, out_channels, H, W).
    """

    def __init__(self, in_channels: int, n_c: int, n_l: int, kernel_size: int = 3,
                 n_t: int | None = None, m: int | None = None, double_pass: bool = True,
                 bidirectional: bool = False, transfer_size: tuple[int, int] | None = None) -> None:
        super().__init__(lambda: LogicLSTMCell(in_channels, n_c, n_l, kernel_size, n_t, m, transfer_size),
                         hidden=n_c + n_l, double_pass=double_pass, bidirectional=bidirectional)
