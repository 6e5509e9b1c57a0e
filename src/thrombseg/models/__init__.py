"""Segmentation networks and the registry the pipeline builds them from.

Every model maps ``x`` (B, M, S, H, W) float and ``available`` (B, M) bool to logits
(B, K, S, H, W), for any H, W (padded internally, cropped back) and any S >= 1.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .attention import AttentionGate, AttentionGateFusion
from .attllstm import AttLLSTM, CrossAttention
from .clstm import ConvLSTM, ConvLSTMCell
from .clstm_net import CLSTMNet
from .llstm import LogicLSTM, LogicLSTMCell
from .logic import LogicOperation
from .transfer import TransferLayer
from .unet25d import UNet25D
from .upattllstm import UpAttLLSTM

#: Config name -> model class. ``upattllstm`` is the default model.
MODEL_REGISTRY: dict[str, type[nn.Module]] = {
    "upattllstm": UpAttLLSTM,
    "attllstm": AttLLSTM,
    "clstm": CLSTMNet,
    "unet25d": UNet25D,
}
DEFAULT_MODEL = "upattllstm"


def build_model(name: str = DEFAULT_MODEL, **kwargs: Any) -> nn.Module:
    """Build a registered model by config name.

    Args:
        name: Registry key (case-insensitive): ``upattllstm``, ``attllstm``, ``clstm``,
            ``unet25d``.
        **kwargs: Constructor arguments, e.g. ``n_modalities``, ``n_classes``, widths.

    Raises:
        KeyError: Unknown name.
    """
    key = name.strip().lower()
    if key not in MODEL_REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[key](**kwargs)


__all__ = [
    "AttLLSTM", "AttentionGate", "AttentionGateFusion", "CLSTMNet", "ConvLSTM", "ConvLSTMCell",
    "CrossAttention", "DEFAULT_MODEL", "LogicLSTM", "LogicLSTMCell", "LogicOperation",
    "MODEL_REGISTRY", "TransferLayer", "UNet25D", "UpAttLLSTM", "build_model",
]
