"""Slice-axis recurrence and the LSTM state update shared by the Logic-LSTM and the ConvLSTM (private)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class LSTMCellBase(nn.Module):
    """An LSTM cell on (N, C, H, W) maps whose subclass computes the gates (f, i, o, d) in ``forward``.

    Holds no parameters: subclasses keep their own state-dict layout.
    """

    hidden: int  # state channels

    def init_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Zero (h, c) matching a (N, C, H, W) input."""
        z = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
        return z, z

    @staticmethod
    def update(f: Tensor, i: Tensor, o: Tensor, d: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """The LSTM state update from gate pre-activations: ``c' = f c + i d``, ``h' = o tanh(c')``."""
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(d)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class SliceRecurrence(nn.Module):
    """Runs a 2-D recurrent cell along the slice axis of (B, S, C, H, W) features.

    Cells implement ``init_state(x) -> (h, c)`` and ``forward(x, (h, c)) -> (h, c)``.

    Double pass (Kobold 2019; MIDL 2024 sec. 2.2.2): a first pass over all slices only builds the
    memory, the second pass starts from that state and emits the outputs, so the first slices are
    not predicted from an empty memory; it adds no parameters. ``bidirectional`` adds a second cell
    run in reverse slice order and concatenates both directions' outputs.
    """

    def __init__(self, make_cell: Callable[[], nn.Module], hidden: int,
                 double_pass: bool = True, bidirectional: bool = False) -> None:
        super().__init__()
        self.double_pass, self.bidirectional, self.hidden = double_pass, bidirectional, hidden
        self.cell = make_cell()
        self.cell_reverse = make_cell() if bidirectional else None

    @property
    def out_channels(self) -> int:
        """Output channels: ``hidden``, doubled when bidirectional."""
        return self.hidden * (2 if self.bidirectional else 1)

    def _run(self, cell: nn.Module, x: Tensor, reverse: bool) -> Tensor:
        s = x.shape[1]
        order = range(s - 1, -1, -1) if reverse else range(s)
        state = cell.init_state(x[:, 0])
        if self.double_pass:
            for t in order:
                state = cell(x[:, t], state)
        out: list[Tensor] = [x] * s  # placeholders, all overwritten
        for t in order:
            state = cell(x[:, t], state)
            out[t] = state[0]
        return torch.stack(out, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, S, C, H, W) -> (B, S, out_channels, H, W)."""
        if x.dim() != 5:
            raise ValueError(f"expected (B, S, C, H, W), got {tuple(x.shape)}")
        y = self._run(self.cell, x, reverse=False)
        if self.cell_reverse is not None:
            y = torch.cat([y, self._run(self.cell_reverse, x, reverse=True)], dim=2)
        return y
