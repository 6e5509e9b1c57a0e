"""Whole-volume prediction with overlapping stacks of slices (averaged), optional flip TTA."""

from __future__ import annotations

import numpy as np
import torch


def stack_starts(n_slices: int, stack: int, overlap: float) -> list[int]:
    """First slice of each stack so that every slice is covered; the last stack ends at the end."""
    if n_slices <= stack:
        return [0]
    step = max(1, int(round(stack * (1 - overlap))))
    starts = list(range(0, n_slices - stack + 1, step))
    if starts[-1] != n_slices - stack:
        starts.append(n_slices - stack)
    return starts


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    arrays: list[np.ndarray | None],
    available: np.ndarray,
    stack: int = 12,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    tta_flip: bool = False,
) -> np.ndarray:
    """Foreground probability (x, y, z) of a whole volume.

    Args:
        model: a network taking ``(x (B, M, S, H, W), available (B, M))``.
        arrays: one (x, y, z) array per model channel, None where absent.
        available: (M,) bool availability.
        stack: slices per stack; volumes with fewer slices are zero-padded.
        overlap: fraction of overlap between consecutive stacks.
        tta_flip: also predict the left-right mirrored volume and average.

    Returns:
        float32 array (x, y, z): softmax probability of class 1, averaged over covering stacks.
    """
    shape = next(a.shape for a in arrays if a is not None)
    X, Y, Z = shape
    M = len(arrays)
    Zp = max(Z, stack)
    vol = np.zeros((M, Zp, X, Y), np.float32)
    for m, a in enumerate(arrays):
        if a is not None:
            vol[m, :Z] = np.asarray(a, np.float32).transpose(2, 0, 1)
    model.eval()
    prob = np.zeros((Zp, X, Y), np.float32)
    count = np.zeros((Zp, 1, 1), np.float32)
    avail = torch.as_tensor(np.asarray(available, bool), device=device)
    starts = stack_starts(Zp, stack, overlap)
    for b in range(0, len(starts), batch_size):
        chunk = starts[b:b + batch_size]
        x = torch.from_numpy(np.stack([vol[:, z:z + stack] for z in chunk])).to(device)
        av = avail.expand(len(chunk), -1)
        p = model(x, av).float().softmax(1)[:, 1]
        if tta_flip:
            p = 0.5 * (p + model(x.flip(-2), av).float().softmax(1)[:, 1].flip(-2))
        p = p.cpu().numpy()
        for k, z in enumerate(chunk):
            prob[z:z + stack] += p[k]
            count[z:z + stack] += 1
    prob /= np.maximum(count, 1)
    return prob[:Z].transpose(1, 2, 0).copy()
