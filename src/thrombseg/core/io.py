"""Atomic file writes, NIfTI with clean headers, and JSON that understands numpy.

Every output goes to a hidden temporary file beside its target and is renamed over it, so a crash or
a kill never leaves a half-written file that Snakemake (or a person) could take for a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes) and rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files owner-only; outputs get the usual mode
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(data: bytes, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def json_default(o):
    """``json.dumps(default=...)`` for numpy values and paths."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=json_default) + "\n"


def write_json(obj: Any, path: str | Path, indent: int | None = 2) -> Path:
    return write_text(to_json(obj, indent), path)


def write_npy(arr: np.ndarray, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr))
    return Path(path)


def write_table(df, path: str | Path, sep: str | None = None, **kwargs) -> Path:
    """A pandas table as TSV (``.tsv``) or CSV, atomically."""
    sep = sep or ("\t" if str(path).endswith(".tsv") else ",")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=sep, index=False, **kwargs)
    return Path(path)


def copy_file(src: str | Path, dst: str | Path) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def nifti_image(arr: np.ndarray, affine: np.ndarray, dtype=np.float32):
    """A nibabel image with a clean header: geometry (qform = sform, code 1) and units only."""
    affine = np.asarray(affine, float)
    img = nib.Nifti1Image(np.asarray(arr, dtype=dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def write_nifti(img, path: str | Path) -> Path:
    """Save a nibabel image atomically."""
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def write_array_nifti(arr: np.ndarray, affine: np.ndarray, path: str | Path, dtype=np.float32) -> Path:
    """Save a voxel array on ``affine``'s grid with a clean header, atomically."""
    return write_nifti(nifti_image(arr, affine, dtype), path)
