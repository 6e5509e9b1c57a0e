"""Checkpoints are data, not code: tensors and plain values, read with ``weights_only=True``.

A pickled model file can run any code when it is loaded; thrombseg never loads one that way. What it
saves holds only tensors, numbers, strings, lists and dicts (numpy values are converted first), and
files of earlier thrombseg versions, which held numpy scalars and arrays, still load: numpy's data
reconstructors are the only globals allowed besides torch's own.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch


class CheckpointError(ValueError):
    """A file that is not a loadable thrombseg checkpoint; the message names it."""


def to_plain(obj):
    """``obj`` with numpy values turned into Python ones (tensors kept) so it loads without code."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """torch.save of plain data to a temp file, then rename: a kill never leaves a truncated file."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(to_plain(obj), tmp)
    os.replace(tmp, path)


def _numpy_data_globals() -> list:
    """numpy's scalar/array reconstructors: data only, found in checkpoints of earlier versions."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.uint32, np.bool_)]
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


def load_checkpoint(path: str | Path, device="cpu", keys: tuple[str, ...] = ("model", "config")) -> dict:
    """The dict saved in ``path``, loaded without running code; CheckpointError if it is not one.

    Args:
        keys: entries the dict must hold (a thrombseg model file: weights and its configuration).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            blob = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = f"it refers to {found.group(1)}" if found else type(exc).__name__
        raise CheckpointError(f"{path}: not a thrombseg checkpoint: loading it would need Python objects "
                              f"beyond tensors and plain data ({why}); thrombseg never runs code from a "
                              "model file") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path}: not a readable checkpoint ({line})") from None
    if not isinstance(blob, dict) or any(k not in blob for k in keys):
        raise CheckpointError(f"{path}: not a thrombseg checkpoint (expected a dict with {', '.join(keys)})")
    return blob
