"""CLSTM baseline (MIDL 2024 ablation): 5x5 conv front end, ConvLSTM across slices, 1x1 head."""

from __future__ import annotations

from torch import Tensor, nn

from ._blocks import ConfigMixin, batch_to_slices, mask_input, slices_to_batch
from .clstm import ConvLSTM


class CLSTMNet(ConfigMixin, nn.Module):
    """A 5x5 convolution + ELU over the stacked sequences (instead of the cross-attention), a
    full-resolution ConvLSTM over the slices, and a 1x1 convolution to the class logits.

    Args:
        n_modalities: Number of input sequences M.
        n_classes: Output classes K.
        stem_channels: Channels of the 5x5 front end.
        hidden: ConvLSTM state channels.
        kernel_size: ConvLSTM gate kernel.
        double_pass, bidirectional: Recurrence options.

    Shape:
        x (B, M, S, H, W), available (B, M) -> logits (B, K, S, H, W).
    """

    def __init__(self, n_modalities: int = 4, n_classes: int = 2, stem_channels: int = 8,
                 hidden: int = 12, kernel_size: int = 3, double_pass: bool = True,
                 bidirectional: bool = False) -> None:
        super().__init__()
        self._store_config(locals())
        self.n_modalities, self.n_classes = n_modalities, n_classes
        self.stem = nn.Sequential(nn.Conv2d(n_modalities, stem_channels, 5, padding=2),
                                  nn.ELU(inplace=True))
        self.clstm = ConvLSTM(stem_channels, hidden, kernel_size, double_pass, bidirectional)
        self.head = nn.Conv2d(self.clstm.out_channels, n_classes, 1)

    def forward(self, x: Tensor, available: Tensor | None = None) -> Tensor:
        """Segment (B, M, S, H, W) given availability (B, M) -> logits (B, K, S, H, W)."""
        x, _ = mask_input(x, available, self.n_modalities)
        b, s = x.shape[0], x.shape[2]
        f = self.stem(slices_to_batch(x))
        f = self.clstm(f.view(b, s, *f.shape[1:])).flatten(0, 1)
        return batch_to_slices(self.head(f), b)
