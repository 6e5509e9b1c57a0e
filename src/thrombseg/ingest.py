"""Ingest stage: one patient's sheet row -> canonical (RAS) float32 NIfTIs + a JSON sidecar.

Headers are rebuilt from the affine and voxel sizes only, so free-text fields that may carry
patient identifiers (descrip, db_name, aux_file, intent_name) never reach the outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from .core.fs import atomic_dir, check_id
from .core.io import nifti_image
from .core.sequences import LABELS, PRESENCE_COLUMN, SEQUENCES, thrombus_absent
from .sheet import Problem, SheetError, label_reference, read_nifti3d, read_sheet, resolve

#: Sheet label column -> the label's name in file names (``thrombus_mask`` -> ``<subject>_thrombus.nii.gz``).
LABEL_OUT = {label: label.removesuffix("_mask") for label in LABELS}


class IngestError(ValueError):
    """A file that cannot be ingested; the message names the file."""


def _header_checks(img: nib.Nifti1Image, path: Path) -> list[str]:
    """Return human-readable warnings about a header (never fatal)."""
    warn = []
    hdr = img.header
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if qcode == 0 and scode == 0:
        warn.append("neither qform nor sform set: orientation is a guess (voxel sizes only)")
    if qcode > 0 and scode > 0:
        q, s = img.get_qform(), img.get_sform()
        if not np.allclose(q, s, atol=1e-2):
            warn.append("qform and sform disagree; sform used")
    zooms = np.asarray(hdr.get_zooms()[:3], float)
    if (zooms <= 0).any() or (zooms > 10).any():
        warn.append(f"implausible voxel size {zooms.tolist()} mm")
    rot = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    oblique = float(np.degrees(np.arccos(np.clip(np.abs(rot).max(axis=0), -1, 1))).max())
    if oblique > 1.0:
        warn.append(f"oblique acquisition ({oblique:.1f} deg from the nearest axis)")
    return warn


def _describe(img: nib.Nifti1Image, data: np.ndarray, orig: nib.Nifti1Image) -> dict:
    finite = data[np.isfinite(data)]
    pct = np.percentile(finite, [1, 50, 99]) if finite.size else [np.nan] * 3
    return {
        "shape": list(data.shape),
        "spacing_mm": [round(float(z), 5) for z in img.header.get_zooms()[:3]],
        "orientation_original": "".join(nib.aff2axcodes(orig.affine)),
        "orientation": "".join(nib.aff2axcodes(img.affine)),
        "dtype_original": str(orig.get_data_dtype()),
        "intensity": {
            "min": float(finite.min()) if finite.size else None,
            "p01": float(pct[0]), "p50": float(pct[1]), "p99": float(pct[2]),
            "max": float(finite.max()) if finite.size else None,
        },
    }


def ingest_subject(row: dict, sheet: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Ingest one patient.

    Args:
        row: the patient's sheet row (column -> string).
        sheet: the sheet path, against which relative paths resolve.
        out_dir: the patient's output folder; written atomically (a temp folder renamed at the end).
            It must be new or empty, or (``overwrite``) a previous thrombseg output; see ``thrombseg.core.fs``.

    Returns:
        The sidecar dictionary that is also written to ``<subject>_ingest.json``.
    """
    sid = check_id(row["subject"])
    sidecar: dict = {"subject": sid, "center": row.get("center", ""), "split": row.get("split", ""),
                     "sequences": {}, "labels": {}, "warnings": []}
    sources = {col: resolve(sheet, row.get(col, "")) for col in (*SEQUENCES, *LABELS)}
    with atomic_dir(out_dir, overwrite, inputs=[sheet, *sources.values()], command="ingest") as tmp:
        for col, path in sources.items():
            if path is not None:
                _ingest_file(col, path, row, tmp, sidecar)
        if sources["thrombus_mask"] is None and thrombus_absent(row.get(PRESENCE_COLUMN, "")):
            _write_empty_thrombus(row, sources, tmp, sidecar)
        (tmp / f"{sid}_ingest.json").write_text(json.dumps(sidecar, indent=2))
    return sidecar


def _canonical(col: str, path: Path) -> tuple[nib.Nifti1Image, nib.Nifti1Image, np.ndarray]:
    """(source image, its closest-RAS version, that version's voxels: a binary uint8 mask for a label)."""
    try:
        orig, data = read_nifti3d(path)
    except ValueError as exc:
        raise IngestError(f"{path}: {exc}") from None
    canon = nib.as_closest_canonical(nib.Nifti1Image(data, orig.affine, orig.header))
    cdata = np.asanyarray(canon.dataobj)
    if col in LABELS:
        cdata = (cdata > 0.5).astype(np.uint8)
    elif not np.isfinite(cdata).all():
        raise IngestError(f"{path}: contains NaN/inf voxels")
    return orig, canon, cdata


def _ingest_file(col: str, path: Path, row: dict, folder: Path, sidecar: dict) -> None:
    """Write one sheet file as ``<subject>_<name>.nii.gz`` (RAS, header geometry only) and describe it in ``sidecar``."""
    orig, canon, cdata = _canonical(col, path)
    name = LABEL_OUT.get(col, col)
    # a fresh header: no free-text field of the source (patient identifiers) reaches the output
    nib.save(nifti_image(cdata, canon.affine, np.uint8 if col in LABELS else np.float32),
             folder / f"{sidecar['subject']}_{name}.nii.gz")
    info = _describe(canon, cdata, orig)
    info["source"] = str(path)
    sidecar["warnings"] += [f"{col}: {w}" for w in _header_checks(orig, path)]
    if col in LABELS:
        info["drawn_on"] = label_reference(row, col)
        info["n_voxels"] = int(cdata.sum())
        info["volume_mm3"] = float(cdata.sum() * np.prod(info["spacing_mm"]))
        sidecar["labels"][name] = info
    else:
        sidecar["sequences"][col] = info


def _write_empty_thrombus(row: dict, sources: dict, folder: Path, sidecar: dict) -> None:
    """A thrombus-negative patient without a mask gets an all-zero one on the grid it would be drawn
    on, so that evaluation and tuning score it as a negative instead of skipping it as unlabelled."""
    ref = label_reference(row, "thrombus_mask")
    if ref is None:  # no susceptibility image: no thrombus model can read this patient anyway
        sidecar["warnings"].append("thrombus_mask: thrombus_present is false, but no swi/t2star grid to write "
                                   "an empty mask on")
        return
    orig, canon, cdata = _canonical(ref, sources[ref])
    zeros = np.zeros(cdata.shape, np.uint8)
    nib.save(nifti_image(zeros, canon.affine, np.uint8), folder / f"{sidecar['subject']}_{LABEL_OUT['thrombus_mask']}.nii.gz")
    info = _describe(canon, zeros, orig)
    info |= {"source": None, "written_as": "all zeros (thrombus_present is false, no thrombus_mask given)",
             "drawn_on": ref, "n_voxels": 0, "volume_mm3": 0.0}
    sidecar["labels"][LABEL_OUT["thrombus_mask"]] = info


def ingest_from_sheet(sheet: str | Path, subject: str, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Look a subject up in a sheet and ingest it into ``out_dir`` (see :func:`ingest_subject`)."""
    # The whole sheet is validated once (rule validate_sheet / `thrombseg validate`); re-validating it
    # per subject would make a large cohort's ingest quadratic in file checks.
    df = read_sheet(sheet)
    rows = df[df["subject"] == subject] if "subject" in df.columns else df.iloc[0:0]
    if rows.empty:
        raise SheetError(sheet, [Problem(None, subject, "subject", None, f"subject {subject!r} not in the sheet")])
    return ingest_subject(rows.iloc[0].to_dict(), sheet, out_dir, overwrite)
