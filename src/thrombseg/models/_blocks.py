"""Shared building blocks for the model zoo (private).

Every normalisation here is per sample (GroupNorm), never BatchNorm: statistics pooled over a
batch would let one sample's (or one absent sequence's) voxels leak into another's output.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBlock(nn.Sequential):
    """``n_convs`` x (k x k conv -> GroupNorm -> LeakyReLU).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        n_convs: Number of conv/norm/activation triplets.
        kernel_size: Spatial kernel size (odd).
    """

    def __init__(self, in_channels: int, out_channels: int, n_convs: int = 2,
                 kernel_size: int = 3) -> None:
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(n_convs):
            # Bias is redundant right before a norm layer.
            layers += [nn.Conv2d(c, out_channels, kernel_size, padding=kernel_size // 2,
                                 bias=False),
                       nn.GroupNorm(math.gcd(out_channels, 8), out_channels),
                       nn.LeakyReLU(0.01, inplace=True)]
            c = out_channels
        super().__init__(*layers)


def as_mask(available: Tensor | None, batch: int, n_modalities: int,
            device: torch.device) -> Tensor:
    """Validate/normalise an availability mask to bool (B, M); ``None`` means all present."""
    if available is None:
        return torch.ones(batch, n_modalities, dtype=torch.bool, device=device)
    if available.shape != (batch, n_modalities):
        raise ValueError(f"available must have shape {(batch, n_modalities)}, "
                         f"got {tuple(available.shape)}")
    return available.to(device=device, dtype=torch.bool)


def mask_input(x: Tensor, available: Tensor | None, n_modalities: int) -> tuple[Tensor, Tensor]:
    """Check x is (B, M, S, H, W) and zero absent sequences before anything can mix them."""
    if x.dim() != 5:
        raise ValueError(f"x must be (B, M, S, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != n_modalities:
        raise ValueError(f"model configured for {n_modalities} sequences, got {x.shape[1]}")
    mask = as_mask(available, x.shape[0], n_modalities, x.device)
    # torch.where (not multiplication) so NaN/inf in an absent sequence cannot propagate.
    x = torch.where(mask[:, :, None, None, None], x, torch.zeros((), dtype=x.dtype,
                                                                device=x.device))
    return x, mask


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad the last two dims (bottom/right) up to a multiple; return the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, (h, w)


def padded_slices(x: Tensor, available: Tensor | None, n_modalities: int,
                  multiple: int) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """Masked (B, M, S, H, W) -> slices (B*S, M, H', W') padded to ``multiple``, their availability
    (B*S, M) and the unpadded (H, W)."""
    x, mask = mask_input(x, available, n_modalities)
    z, size = pad_to_multiple(slices_to_batch(x), multiple)
    return z, mask.repeat_interleave(x.shape[2], dim=0), size


def slices_to_batch(x: Tensor) -> Tensor:
    """(B, M, S, H, W) -> (B*S, M, H, W): 2-D ops then treat every slice as a sample."""
    b, m, s, h, w = x.shape
    return x.transpose(1, 2).reshape(b * s, m, h, w)


def batch_to_slices(y: Tensor, batch: int) -> Tensor:
    """(B*S, K, H, W) -> (B, K, S, H, W)."""
    n, k, h, w = y.shape
    return y.view(batch, n // batch, k, h, w).transpose(1, 2)


class ConfigMixin:
    """Gives models ``from_config`` and a ``config`` dict that rebuilds them."""

    config: dict[str, Any]

    def _store_config(self, frame_locals: Mapping[str, Any]) -> None:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        self.config = {n: frame_locals[n] for n in names if n in frame_locals}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]):
        """Build from a mapping of constructor kwargs (a ``name`` key is ignored)."""
        kwargs = {k: v for k, v in dict(cfg).items() if k not in ("name", "model")}
        return cls(**kwargs)
