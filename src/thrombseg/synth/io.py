"""Deterministic writing of NIfTI (gzip mtime 0), JSON and TSV files."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

COMPRESS_LEVEL = 1


def make_image(data: np.ndarray, affine: np.ndarray, dtype: str, scaled: bool = False,
               descrip: str = "") -> nib.Nifti1Image:
    """3-D NIfTI-1 with identical qform/sform (code 1, scanner) and an explicit on-disk dtype.

    ``scaled``: keep float values but store them as ``dtype`` integers with scl_slope/scl_inter
    (nibabel chooses the scaling), as scanners do for phase maps.
    """
    data = np.asarray(data)
    if scaled:
        arr = np.asarray(data, np.float32)
    elif dtype in ("int16", "uint16", "uint8"):
        info = np.iinfo(dtype)
        arr = np.clip(np.round(data), info.min, info.max).astype(dtype)
    else:
        arr = np.asarray(data, dtype=dtype)
        if arr.dtype.kind == "f" and arr.size:
            # scanner floats come from ~12-bit data: quantise (keeps files compressible)
            top = float(np.percentile(np.abs(arr[::7]), 99.9))
            if top > 0:
                q = np.float32(top / 4096.0)
                arr = (np.round(arr / q) * q).astype(dtype)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.dtype(dtype))
    img = nib.Nifti1Image(arr, affine, header=hdr)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = descrip[:79].encode()
    return img


def save_nifti(img: nib.Nifti1Image, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = img.to_bytes()
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(gzip.compress(raw, compresslevel=COMPRESS_LEVEL, mtime=0))
    os.replace(tmp, path)
    return path


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        return round(float(o), 6)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def write_json(obj, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")
    return path


def write_tsv(rows: list[dict], columns: list[str], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)]
    for r in rows:
        lines.append("\t".join("" if r.get(c) is None else str(r.get(c)) for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path
