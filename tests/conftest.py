"""Shared fixtures: tiny NIfTIs and the path of the real public cases."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# A session of tests never talks to a Slurm controller unless a test asks for one.
os.environ.setdefault("SLURM_CONF", "/nonexistent")

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture
def real_data() -> Path:
    """The folder of real public cases; tests skip when a fresh clone does not have it."""
    if not REAL.is_dir():
        pytest.skip(f"real public cases not available at {REAL} (only shipped beside the dev checkout)")
    return REAL


def write_nifti(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 1.0), affine=None) -> Path:
    """Write a NIfTI with a diagonal affine (or the given one)."""
    if affine is None:
        affine = np.diag([*spacing, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path
