"""Shared helpers of the preprocessing stage: clear errors, ANTs <-> NIfTI images, image writes.

Every file this stage writes goes through :mod:`thrombseg.core.io` (temporary file, then rename).
torch is imported by :func:`set_threads` only, deliberately late: reading and writing images must not
pay its seconds of import (the workflow's DAG parse imports this module).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

# ANTs/ITK reads the thread count from the environment; keep the default polite on shared machines.
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import ants  # noqa: E402  (after the thread setting)

from ..core.io import nifti_image, write_nifti  # noqa: E402
from ..core.sequences import old_names  # noqa: E402

# LPS (ITK/ANTs) <-> RAS (NIfTI/nibabel) flip of the first two physical axes.
_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


class PreprocessingError(ValueError):
    """Bad input to the preprocessing stage; the message names the file and the problem."""


def set_threads(n: int | None, deterministic: bool = True) -> None:
    """Use ``n`` threads for ITK/ANTs and torch (None: leave as is).

    ``deterministic`` (default) keeps ITK single-threaded: ANTs registrations with several threads differ from
    run to run even with a fixed seed (the metric's partial sums are reduced in scheduling order), so
    patients are parallelised by Snakemake instead. ITK reads the setting once per process, before its
    first filter runs.
    """
    if not n:
        return
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1" if deterministic else str(int(n))
    import torch

    torch.set_num_threads(int(n))


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def label_file(folder: Path, subject: str, name: str) -> Path | None:
    """``<subject>_<name>.nii.gz`` in ``folder``, else the file an earlier version wrote under an old
    name (``_lesion`` for ``_infarct``); None when neither exists."""
    return next((p for n in (name, *old_names(name)) if (p := folder / f"{subject}_{n}.nii.gz").is_file()), None)


def load_image(path: str | Path, *, what: str = "image", allow_constant: bool = False) -> ants.ANTsImage:
    """Read a 3-D NIfTI as a float32 ANTs image, or raise :class:`PreprocessingError`.

    Checks: the file exists, is a readable NIfTI, is 3-D (a trailing singleton 4th axis is
    squeezed), has a usable (non-singular) affine, only finite values, and is not constant.
    """
    path = Path(path)
    if not path.is_file():
        raise PreprocessingError(f"{path}: {what} not found")
    try:
        nii = nib.load(str(path))
        shape = nii.shape
    except Exception as exc:
        raise PreprocessingError(f"{path}: {what} is not a readable NIfTI ({type(exc).__name__}: {exc})") from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise PreprocessingError(f"{path}: {what} must be 3-D, got shape {tuple(nii.shape)}")
    if min(shape) < 2:
        raise PreprocessingError(f"{path}: {what} has a degenerate shape {tuple(shape)}")
    aff = nii.affine
    if not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise PreprocessingError(f"{path}: {what} has a singular or non-finite affine")
    try:
        data = np.asarray(nii.dataobj, dtype=np.float32).reshape(shape)
    except Exception as exc:
        raise PreprocessingError(f"{path}: {what} voxel data unreadable ({type(exc).__name__}: {exc})") from None
    if not np.isfinite(data).all():
        raise PreprocessingError(f"{path}: {what} contains NaN/inf voxels")
    if not allow_constant and float(data.max()) == float(data.min()):
        raise PreprocessingError(f"{path}: {what} is constant (every voxel = {float(data.max()):g})")
    return from_nibabel_arrays(data, aff)


def from_nibabel_arrays(data: np.ndarray, affine: np.ndarray) -> ants.ANTsImage:
    """ANTs image from a voxel array and a NIfTI (RAS) affine, geometry preserved exactly."""
    affine = np.asarray(affine, float)
    lin = _LPS_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    direction = lin / spacing
    origin = _LPS_RAS @ affine[:3, 3]
    return ants.from_numpy(np.ascontiguousarray(data, dtype=np.float32), origin=tuple(origin.tolist()),
                           spacing=tuple(spacing.tolist()), direction=direction)


def nifti_affine(img: ants.ANTsImage) -> np.ndarray:
    """The NIfTI (RAS) voxel-to-world affine of an ANTs image."""
    d = np.asarray(img.direction, float) @ np.diag(img.spacing)
    aff = np.eye(4)
    aff[:3, :3] = _LPS_RAS @ d
    aff[:3, 3] = _LPS_RAS @ np.asarray(img.origin, float)
    return aff


def to_nibabel(img: ants.ANTsImage, dtype=np.float32):
    """nibabel image (clean header: geometry only) of an ANTs image."""
    return nifti_image(img.numpy(), nifti_affine(img), dtype)


def like(ref: ants.ANTsImage, data: np.ndarray) -> ants.ANTsImage:
    """ANTs image with ``ref``'s geometry and ``data``'s voxels (float32)."""
    return ants.from_numpy(np.ascontiguousarray(data, dtype=np.float32), origin=ref.origin,
                           spacing=ref.spacing, direction=ref.direction)


def atomic_write_nifti(img, path: str | Path, dtype=np.float32) -> Path:
    """Write an ANTs or nibabel image as NIfTI atomically (ANTs images get a clean RAS header)."""
    return write_nifti(to_nibabel(img, dtype) if isinstance(img, ants.ANTsImage) else img, path)
