"""UpAttLLSTM: attention-fused, Logic-LSTM-recurrent 2.5-D U-Net."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._blocks import ConfigMixin, ConvBlock, batch_to_slices, padded_slices
from ._unet import UNetDecoder, UNetEncoder
from .attention import AttentionGateFusion
from .llstm import LogicLSTM
from .transfer import scaled_size


class UpAttLLSTM(ConfigMixin, nn.Module):
    """Per-slice stems -> attention-gated fusion of the available sequences -> U-Net encoder ->
    Logic-LSTM across slices (bottleneck by default) -> attention-gated U-Net decoder.

    Absent sequences are zeroed before the stems and get fusion weight exactly 0, and every norm
    is per slice and per branch (GroupNorm), so an absent sequence's voxels cannot change the
    output.

    Args:
        n_modalities: Number of input sequences M.
        n_classes: Output classes K (softmax over K).
        widths: Channels per U-Net level, finest first; ``len(widths) - 1`` poolings.
        n_convs: Convs per encoder/decoder block.
        stem: ``"per_sequence"`` (own stem weights per sequence) or ``"shared"``.
        stem_convs: Convs in each sequence's stem.
        recurrent_levels: Encoder levels whose output goes through an LLSTM before feeding the
            decoder; default the bottleneck only. Negative indices count from the bottom.
        n_c, n_l: LLSTM convolution/logic state channels; default ``widths[level] // 8`` each.
        n_t, m: Transfer-layer channels and multiplicity (defaults ``n_l`` and ``n_t // 4``).
        kernel_size: LLSTM w x w kernel.
        double_pass: LLSTM double pass (first builds memory, second predicts).
        bidirectional: Add a reverse-order LLSTM (outputs concatenated).
        gated_skips: Attention-gate the skip connections.
        transfer_size: Slice size ``(H, W)`` (or one int) in input pixels that the Logic-LSTM's
            transfer windows are sized for, fixed: the training crop, so a whole slice at inference
            sees the windows the network learned; ``None``: each input's own size.
        infer_chunk: Without autograd, run the per-slice parts this many slices at a time (same
            output up to float rounding, far less memory traffic); ``None``: all at once.

    Shape:
        x (B, M, S, H, W) float, available (B, M) bool -> logits (B, K, S, H, W).
    """

    def __init__(self, n_modalities: int = 4, n_classes: int = 2,
                 widths: Sequence[int] = (16, 32, 64, 128), n_convs: int = 2,
                 stem: str = "per_sequence", stem_convs: int = 1,
                 recurrent_levels: Sequence[int] | None = None, n_c: int | None = None,
                 n_l: int | None = None, n_t: int | None = None, m: int | None = None,
                 kernel_size: int = 3, double_pass: bool = True, bidirectional: bool = False,
                 gated_skips: bool = True, infer_chunk: int | None = 2,
                 transfer_size: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self._store_config(locals())
        widths = self.widths = tuple(widths)
        if stem not in ("per_sequence", "shared"):
            raise ValueError(f"stem must be 'per_sequence' or 'shared', got {stem!r}")
        self.n_modalities, self.n_classes, self.infer_chunk = n_modalities, n_classes, infer_chunk
        self.multiple = 2 ** (len(widths) - 1)
        c0 = widths[0]
        # Separate small convs, not one grouped conv: faster on CPU, and an absent sequence is skipped.
        n_stems = n_modalities if stem == "per_sequence" else 1
        self.stems = nn.ModuleList(ConvBlock(1, c0, stem_convs) for _ in range(n_stems))
        self.fusion = AttentionGateFusion(c0)
        self.encoder = UNetEncoder(c0, widths, n_convs)
        levels = [len(widths) - 1] if recurrent_levels is None else list(recurrent_levels)
        self.recurrent_levels = sorted({lv % len(widths) for lv in levels})
        self.recurrent = nn.ModuleDict()
        skip_channels = list(widths)
        for lv in self.recurrent_levels:
            nc = n_c or max(widths[lv] // 8, 1)
            nl = n_l or max(widths[lv] // 8, 1)
            rnn = LogicLSTM(widths[lv], nc, nl, kernel_size, n_t=n_t, m=m,
                            transfer_size=scaled_size(transfer_size, 2 ** lv),
                            double_pass=double_pass, bidirectional=bidirectional)
            self.recurrent[str(lv)] = rnn
            skip_channels[lv] = rnn.out_channels
        self.decoder = UNetDecoder(skip_channels, widths, n_convs, gated_skips)
        self.head = nn.Conv2d(c0, n_classes, 1)

    def _encode(self, z: Tensor, mask: Tensor) -> list[Tensor]:
        """Stems, fusion and encoder for slices z (N, M, H, W) with row availability (N, M)."""
        maps = []
        for j in range(z.shape[1]):
            zj = z[:, j:j + 1]
            if mask[:, j].any():
                maps.append(self.stems[j if len(self.stems) > 1 else 0](zj))
            else:  # absent from every row: skip the work, the fusion zeroes it anyway
                maps.append(zj.new_zeros(zj.shape[0], self.widths[0], *zj.shape[-2:]))
        fused, _ = self.fusion(maps, mask)
        return self.encoder(fused)

    def forward(self, x: Tensor, available: Tensor | None = None) -> Tensor:
        """Segment (B, M, S, H, W) given availability (B, M) -> logits (B, K, S, H, W)."""
        z, mask_n, (h, w) = padded_slices(x, available, self.n_modalities, self.multiple)
        b, s = x.shape[0], x.shape[2]
        # channels_last: oneDNN's native layout, the fast one for CPU convs; outputs follow it.
        z = z.contiguous(memory_format=torch.channels_last)
        n = z.shape[0]
        # Without autograd, the per-slice work runs a few slices at a time: small reusable buffers.
        step = n if torch.is_grad_enabled() or not self.infer_chunk else self.infer_chunk
        parts = [self._encode(z[i:i + step], mask_n[i:i + step]) for i in range(0, n, step)]
        feats = [torch.cat(level) if len(level) > 1 else level[0] for level in zip(*parts)]
        for key, rnn in self.recurrent.items():
            lv = int(key)
            f = feats[lv]
            feats[lv] = rnn(f.reshape(b, s, *f.shape[1:])).flatten(0, 1)
        logits = torch.cat([self.head(self.decoder([f[i:i + step] for f in feats]))
                            for i in range(0, n, step)])
        return batch_to_slices(logits[..., :h, :w], b)
