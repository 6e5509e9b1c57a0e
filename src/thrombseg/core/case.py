"""A harmonized case: one patient's arrays on the reference grid, read with random access."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .sequences import FALLBACK, OLD_TARGET_FILES, SEQUENCES, TARGET_FILES


@dataclass
class Case:
    """One patient's harmonized volumes (x, y, z), memory-mapped."""

    subject: str
    center: str
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    brain: np.ndarray | None = None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    affine: np.ndarray | None = None  # voxel -> RAS mm of the harmonized grid, when known

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.images.values())).shape

    def inputs(self, modalities, fallback=FALLBACK, drop=()) -> tuple[list, np.ndarray]:
        """Arrays for the model's channels (None = absent) and the availability vector."""
        arrays, avail = [], []
        for m in modalities:
            arr = None
            for name in (m, *fallback.get(m, ())):
                if name in self.images and name not in drop:
                    arr = self.images[name]
                    break
            arrays.append(arr)
            avail.append(arr is not None)
        return arrays, np.asarray(avail, bool)


def load_case(folder: str | Path, subject: str | None = None, center: str = "", mmap: bool = True) -> Case:
    """Load a harmonized case folder (``<subject>_<seq>.npy``, ``_label-*.npy``, ``_brainmask.npy``).

    A folder harmonized by an earlier version keeps its infarct label: ``_label-lesion.npy`` is read
    as ``labels["infarct"]`` (a ``_label-infarct.npy`` beside it wins).
    """
    folder = Path(folder)
    subject = subject or folder.name
    if not folder.is_dir():
        raise FileNotFoundError(f"harmonized case folder not found: {folder}")
    mode = "r" if mmap else None
    stems = {stem: target for target, stem in TARGET_FILES.items()}
    images, labels, old, brain = {}, {}, {}, None
    for f in sorted(folder.glob(f"{subject}_*.npy")):
        key = f.stem[len(subject) + 1:]
        if key in SEQUENCES:
            images[key] = np.load(f, mmap_mode=mode)
        elif key == "brainmask":
            brain = np.load(f, mmap_mode=mode)
        elif key in stems:
            labels[stems[key]] = np.load(f, mmap_mode=mode)
        elif key in OLD_TARGET_FILES:
            old[OLD_TARGET_FILES[key]] = f
    for target, f in old.items():
        if target not in labels:
            labels[target] = np.load(f, mmap_mode=mode)
    if not images:
        raise FileNotFoundError(f"{folder}: no harmonized sequence arrays ({subject}_<seq>.npy)")
    spacing, affine, center = _grid_of(folder, center)
    return Case(subject, center, images, labels, brain, spacing, affine)


def _grid_of(folder: Path, center: str) -> tuple[tuple[float, float, float], np.ndarray | None, str]:
    """Spacing, affine and center from the first sidecar JSON that states a spacing."""
    for j in sorted(folder.glob("*.json")):
        try:
            meta = json.loads(j.read_text())
        except ValueError:
            continue
        sp = meta.get("spacing_mm") or meta.get("spacing")
        if sp:
            affine = meta.get("affine_ras")
            return (tuple(float(v) for v in sp), None if affine is None else np.asarray(affine, float),
                    center or meta.get("center", ""))
    return (1.0, 1.0, 1.0), None, center
