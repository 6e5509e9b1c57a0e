"""Checkpoints are data, not code: tensors and plain values, read with ``weights_only=True``.

A pickled model file can run any code when it is loaded; thrombseg never loads one that way. What it
saves holds only tensors, numbers, strings, lists and dicts (numpy values are converted first), and
files of earlier thrombseg versions, which held numpy scalars and arrays, still load: numpy's data
reconstructors are the only globals allowed besides torch's own.

Inference rebuilds a model from its file through :func:`load_model` alone: the training stage is
never imported to read one.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.sequences import DEFAULT_MODALITIES, current_target
from . import MODEL_REGISTRY, build_model

# ``thrombseg_format`` of the model files this version writes; 2: transfer windows sized for the
# training crop (files of format 1 keep the input-sized windows they were trained with)
FORMAT = 2


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
    """torch.save of plain data to a temp file, then rename: a kill never leaves a truncated file.

    Not core.io.atomic_path: torch names the archive's inner folder after the file it writes, less
    its last suffix, so the temp file is ``<name>.tmp<pid>`` and the saved bytes stay deterministic.
    """
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


@dataclass
class ModelSpec:
    """What a model file says about its network: how to build it and what it reads.

    ``config`` is the whole training configuration saved with the weights (provenance).
    """

    model: str = "upattllstm"
    model_kwargs: dict = field(default_factory=dict)
    modalities: list[str] | None = None
    target: str = "thrombus"
    stack: int = 12
    crop: tuple[int, int] | None = None
    threshold: float = 0.5
    config: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict) -> ModelSpec:
        keys = ("model", "model_kwargs", "modalities", "target", "stack", "crop", "threshold")
        spec = cls(**{k: config[k] for k in keys if config.get(k) is not None}, config=dict(config))
        spec.target = current_target(spec.target)  # an earlier version's infarct model says "lesion"
        if spec.modalities is None:
            spec.modalities = list(DEFAULT_MODALITIES[spec.target])
        return spec


def build_network(spec) -> torch.nn.Module:
    """The network ``spec`` names (a ModelSpec or a training config); a model whose constructor takes
    ``modalities`` (AttLLSTM) gets the channel names too, so it can give sequences their roles."""
    kwargs = dict(spec.model_kwargs)
    cls = MODEL_REGISTRY.get(str(spec.model).strip().lower())
    params = inspect.signature(cls).parameters if cls is not None else {}
    if "modalities" in params:
        kwargs.setdefault("modalities", list(spec.modalities))
    if "transfer_size" in params and getattr(spec, "crop", None) is not None:
        kwargs.setdefault("transfer_size", list(spec.crop))  # the windows the network trains with
    return build_model(spec.model, n_modalities=len(spec.modalities), n_classes=2, **kwargs)


def export(model: torch.nn.Module, config: dict, metrics: dict) -> dict:
    """What inference needs: weights + the configuration that built them."""
    return {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": config, "metrics": dict(metrics), "thrombseg_format": FORMAT}


def load_model(path: str | Path, device="cpu") -> tuple[torch.nn.Module, ModelSpec]:
    """Rebuild a trained model from ``model.pt``, in eval mode."""
    blob = load_checkpoint(path, device)  # data only: a model file never runs code
    spec = ModelSpec.from_config(blob["config"])
    if blob.get("thrombseg_format", 1) < 2:
        spec.crop = None  # its transfer windows were sized by each input: keep them so
    model = build_network(spec).to(device)
    try:
        model.load_state_dict(blob["model"])
    except ValueError as exc:  # a model that recognises an incompatible layout says so in one line
        raise CheckpointError(f"{path}: {exc}") from None
    model.eval()
    return model, spec


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when visible; a requested but absent GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but no CUDA device is visible (use 'auto' or 'cpu')")
    return torch.device(name)
