"""UNet2.5D: nnU-Net-style 2-D U-Net with neighbouring slices as channels (no recurrence)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._blocks import ConfigMixin, batch_to_slices, mask_input, pad_to_multiple
from ._unet import UNetDecoder, UNetEncoder


class UNet25D(ConfigMixin, nn.Module):
    """2-D U-Net that predicts slice ``s`` from slices ``s - context .. s + context`` of every
    sequence stacked as channels (zero slices beyond the volume).

    Absent sequences are zeroed at the input (the usual zero-imputation baseline).

    Args:
        n_modalities: Number of input sequences M.
        n_classes: Output classes K.
        context: Neighbouring slices on each side.
        widths: Channels per level, finest first.
        n_convs: Convs per block.
        gated_skips: Attention-gate the skips (off: plain U-Net).

    Shape:
        x (B, M, S, H, W), available (B, M) -> logits (B, K, S, H, W).
    """

    def __init__(self, n_modalities: int = 4, n_classes: int = 2, context: int = 1,
                 widths: Sequence[int] = (16, 32, 64, 128), n_convs: int = 2,
                 gated_skips: bool = False) -> None:
        super().__init__()
        self._store_config(locals())
        widths = tuple(widths)
        self.n_modalities, self.n_classes, self.context = n_modalities, n_classes, context
        self.multiple = 2 ** (len(widths) - 1)
        self.encoder = UNetEncoder(n_modalities * (2 * context + 1), widths, n_convs)
        self.decoder = UNetDecoder(widths, widths, n_convs, gated_skips)
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: Tensor, available: Tensor | None = None) -> Tensor:
        """Segment (B, M, S, H, W) given availability (B, M) -> logits (B, K, S, H, W)."""
        x, _ = mask_input(x, available, self.n_modalities)
        b, m, s, h, w = x.shape
        r = self.context
        xp = F.pad(x, (0, 0, 0, 0, r, r))                     # zero slices at both ends
        win = xp.unfold(2, 2 * r + 1, 1)                       # (B, M, S, H, W, 2r+1)
        z = win.permute(0, 2, 1, 5, 3, 4).reshape(b * s, m * (2 * r + 1), h, w)
        z, _ = pad_to_multiple(z, self.multiple)
        z = z.contiguous(memory_format=torch.channels_last)  # faster oneDNN convs on CPU
        logits = self.head(self.decoder(self.encoder(z)))[..., :h, :w]
        return batch_to_slices(logits, b)
