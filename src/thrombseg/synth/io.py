"""Deterministic files of the synthetic cohort: gzipped NIfTI (mtime 0), rounded JSON, TSV.

Byte-identical cohorts for one seed are a feature (tests and users compare checksums), so NIfTI
files are gzipped here with a fixed mtime and compress level; the atomic write, the clean NIfTI
header and the JSON encoding are those of :mod:`thrombseg.core.io`.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.io import nifti_image, write_bytes, write_text
from ..core.io import write_json as write_core_json

COMPRESS_LEVEL = 1
JSON_DECIMALS = 6  # short, stable JSON files (micrometre precision on positions in mm)
INTEGER_DTYPES = ("int16", "uint16", "uint8")
FLOAT_LEVELS = 4096.0  # scanner floats come from ~12-bit data


def _quantised_float(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Floats on ~12-bit steps as scanners deliver them (keeps the files compressible)."""
    top = float(np.percentile(np.abs(arr[::7]), 99.9))
    if top <= 0:
        return arr
    step = np.float32(top / FLOAT_LEVELS)
    return (np.round(arr / step) * step).astype(dtype)


def _stored_values(data: np.ndarray, dtype: str, scaled: bool) -> np.ndarray:
    """The voxel array to hand to nibabel for an on-disk ``dtype``."""
    data = np.asarray(data)
    if scaled:
        return np.asarray(data, np.float32)
    if dtype in INTEGER_DTYPES:
        info = np.iinfo(dtype)
        return np.clip(np.round(data), info.min, info.max).astype(dtype)
    arr = np.asarray(data, dtype=dtype)
    if arr.dtype.kind == "f" and arr.size:
        arr = _quantised_float(arr, dtype)
    return arr


def make_image(data: np.ndarray, affine: np.ndarray, dtype: str, scaled: bool = False,
               descrip: str = "") -> nib.Nifti1Image:
    """3-D NIfTI-1 with a clean header (core) and an explicit on-disk dtype.

    ``scaled``: keep float values but store them as ``dtype`` integers with scl_slope/scl_inter
    (nibabel chooses the scaling), as scanners do for phase maps.
    """
    arr = _stored_values(data, dtype, scaled)
    img = nifti_image(arr, affine, dtype=arr.dtype)
    img.set_data_dtype(np.dtype(dtype))
    img.header["descrip"] = descrip[:79].encode()
    return img


def save_nifti(img: nib.Nifti1Image, path: Path) -> Path:
    """Write ``img`` gzipped with mtime 0, so that the same image gives the same bytes."""
    return write_bytes(gzip.compress(img.to_bytes(), compresslevel=COMPRESS_LEVEL, mtime=0), path)


def _rounded(obj):
    """``obj`` with every float rounded to JSON_DECIMALS (numpy arrays become lists, keys strings)."""
    if isinstance(obj, dict):
        return {str(k): _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _rounded(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return round(float(obj), JSON_DECIMALS)
    return obj


def write_json(obj, path: Path) -> Path:
    """``obj`` as JSON (indent 1) with floats rounded to JSON_DECIMALS."""
    return write_core_json(_rounded(obj), path, indent=1)


def write_tsv(rows: list[dict], columns: list[str], path: Path) -> Path:
    """Rows as a TSV with a header line; missing values and None are empty cells."""
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return write_text("\n".join(lines) + "\n", path)
