"""The training curve: loss and validation metrics per epoch, curriculum stages shaded.

Drawn with Matplotlib's object API (``matplotlib.figure.Figure``): no pyplot state and no GUI
backend, so importing this module changes nothing for the rest of the process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..core.io import atomic_path
from .config import TrainConfig

STAGE_SHADES = ("#f0f0f0", "#d9d9d9", "#bdbdbd", "#969696", "#737373")


def plot_training_curve(history: list[dict], cfg: TrainConfig, path: Path) -> Path:
    """Loss and validation metrics per epoch, curriculum stages shaded."""
    ep = np.array([r["epoch"] + 1 for r in history])
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    stages = np.array([r["stage"] for r in history])
    for s in np.unique(stages):
        e = ep[stages == s]
        att = history[int(np.flatnonzero(stages == s)[0])]["attenuation"]
        ax.axvspan(e.min() - 0.5, e.max() + 0.5, color=STAGE_SHADES[int(s) % len(STAGE_SHADES)], alpha=0.6, lw=0)
        ax.text(e.mean(), 1.02, f"a={att:.2f}", ha="center", va="bottom", fontsize=8, transform=ax.get_xaxis_transform())
    ax.plot(ep, [r["train_loss"] for r in history], color="#0072B2", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel(("loss (Dice + CE" if cfg.loss == "dice_ce" else f"loss ({cfg.loss}") + ", unitless)")
    ax2 = ax.twinx()
    ax2.plot(ep, [r["val_dice"] for r in history], "o-", color="#D55E00", ms=3, label="val Dice")
    ax2.plot(ep, [r["val_detection"] for r in history], "s--", color="#009E73", ms=3, label="val detection rate")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("validation Dice / detection (fraction)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="center right", fontsize=8)
    # pad: the stage labels (a=...) sit just above the axes, under the title
    ax.set_title(f"{cfg.model} / {cfg.target}: GMD stages shaded ({cfg.dropout.schedule})", fontsize=9, pad=16)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return path
