"""Segmentation losses for extreme class imbalance: CE (paper), Dice + CE (default), focal."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationLoss(nn.Module):
    """Loss on logits (B, K, S, H, W) against integer targets (B, S, H, W).

    Args:
        kind: ``"ce"``, ``"dice_ce"`` or ``"focal"``.
        class_weights: optional per-class CE weights, e.g. ``[1, 10]``.
        focal_gamma: focusing parameter of the focal loss.
        smooth: Dice smoothing; the soft Dice is computed over the whole batch (nnU-Net's
            batch Dice) so that thrombus-free stacks do not produce 0/0.
    """

    def __init__(self, kind: str = "dice_ce", class_weights=None, focal_gamma: float = 2.0, smooth: float = 1e-5):
        super().__init__()
        if kind not in ("ce", "dice_ce", "focal"):
            raise ValueError(f"unknown loss {kind!r}: expected ce, dice_ce or focal")
        self.kind = kind
        w = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", w, persistent=False)
        self.focal_gamma = focal_gamma
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, target, weight=self.class_weights, reduction="none")
        if self.kind == "focal":
            pt = torch.exp(-F.cross_entropy(logits, target, reduction="none"))
            return ((1 - pt) ** self.focal_gamma * ce).mean()
        if self.kind == "ce":
            return ce.mean()
        prob = logits.softmax(1)[:, 1:]
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].float()
        dims = (0, *range(2, prob.ndim))
        inter = (prob * onehot).sum(dims)
        denom = prob.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (denom + self.smooth)
        return ce.mean() + (1 - dice).mean()
