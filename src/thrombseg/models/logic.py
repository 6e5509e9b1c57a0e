"""Logic operation of the Logic-LSTM (Vargas-Ibarra et al., MIDL 2024, eqs. 8-11)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .transfer import TransferLayer


class LogicOperation(nn.Module):
    """``Logic(A) = a1 || a2``, computed for ``n_gates`` gates at once.

    With the states split as ``c = c1 || c2`` and ``h = h1 || h2`` (``n_c`` convolution channels,
    ``n_l`` logic channels), ``A_c = c1 || h1 || x`` and ``A_l = c2 || h2``::

        a1 = L1(A_c) + L2(A_l)              # L1: w x w conv; L2: 1 x 1 conv, no bias
        a2 = L4(T(L3(A_c)) || A_l)          # L3: w x w conv; L4: 1 x 1 conv; T: TransferLayer

    Implementation notes (exactly equivalent, fewer kernel launches): L1 and L3 of all gates are
    one w x w convolution over ``A_c``; L2 and the ``A_l`` half of L4 of all gates are one bias-free
    1 x 1 convolution over ``A_l`` (a 1 x 1 conv of a concatenation is the sum of 1 x 1 convs of the
    parts, so L4's bias lives in the grouped 1 x 1 convolution over the ``T`` outputs).

    Args:
        in_channels: Channels of the input ``x``.
        n_c: Convolution-part channels of each state (and of ``a1``).
        n_l: Logic-part channels of each state (and of ``a2``).
        kernel_size: ``w`` of L1 and L3.
        n_t: Output channels of L3 (input of T); default ``n_l``.
        m: Transfer-layer multiplicity (channels per pooling group); default ``n_t // 4``
        transfer_size: Slice size the transfer windows are sized for (see :class:`TransferLayer`).
            (4 scales).
        n_gates: Number of gates computed (4 in the LSTM: f, i, o and the candidate).
    """

    def __init__(self, in_channels: int, n_c: int, n_l: int, kernel_size: int = 3,
                 n_t: int | None = None, m: int | None = None, n_gates: int = 1,
                 transfer_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if n_c < 1 or n_l < 1:
            raise ValueError("n_c and n_l must be >= 1")
        n_t = n_l if n_t is None else n_t
        m = max(1, n_t // 4) if m is None else m
        self.in_channels, self.n_c, self.n_l, self.n_t, self.n_gates = (
            in_channels, n_c, n_l, n_t, n_gates)
        g = n_gates
        self.conv_ac = nn.Conv2d(2 * n_c + in_channels, g * (n_c + n_t), kernel_size,
                                 padding=kernel_size // 2)                    # L1 | L3
        self.conv_al = nn.Conv2d(2 * n_l, g * (n_c + n_l), 1, bias=False)    # L2 | L4 on A_l
        self.transfer = TransferLayer(n_t, m, transfer_size)                  # T
        self.conv_t = nn.Conv2d(g * n_t, g * n_l, 1, groups=g)                # L4 on T(.)

    @property
    def out_channels(self) -> int:
        """Channels per gate, ``n_c + n_l``."""
        return self.n_c + self.n_l

    def forward(self, x: Tensor, c: Tensor, h: Tensor) -> Tensor:
        """Return gate pre-activations (N, n_gates, n_c + n_l, H, W).

        Args:
            x: Input (N, in_channels, H, W).
            c: Cell state (N, n_c + n_l, H, W).
            h: Hidden state (N, n_c + n_l, H, W).
        """
        n, _, hh, ww = x.shape
        g, n_c, n_l, n_t = self.n_gates, self.n_c, self.n_l, self.n_t
        a_c = torch.cat([c[:, :n_c], h[:, :n_c], x], dim=1)
        a_l = torch.cat([c[:, n_c:], h[:, n_c:]], dim=1)
        u = self.conv_ac(a_c).view(n, g, n_c + n_t, hh, ww)
        v = self.conv_al(a_l).view(n, g, n_c + n_l, hh, ww)
        t = self.transfer(u[:, :, n_c:].reshape(n * g, n_t, hh, ww)).view(n, g * n_t, hh, ww)
        a1 = u[:, :, :n_c] + v[:, :, :n_c]
        a2 = self.conv_t(t).view(n, g, n_l, hh, ww) + v[:, :, n_c:]
        return torch.cat([a1, a2], dim=2)
