"""Site harmonisation: Nyul histogram standardisation (TorchIO) fitted on training patients only,
then robust z-scoring inside the brain; explicit ADC unit handling.

Two steps, matching the workflow's rules:

* :func:`fit_landmarks` (one gather rule): per sequence, TorchIO's
  ``HistogramStandardization.train`` on the training-split patients' preprocessed images inside
  their brain masks; writes one JSON landmarks file.
* :func:`harmonize_subject` (one rule per patient, every patient and every center, seen in training
  or not): applies the landmarks, robust-z-scores in the brain and writes float32 ``.npy`` arrays for
  memory-mapped reads by training (``np.load(path, mmap_mode="r")``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..core.fs import check_id
from ..core.io import write_json, write_npy
from ._io import PreprocessingError, load_image

#: Canonical ADC unit of the pipeline.
ADC_UNIT = "1e-3 mm^2/s"
#: Sequences that are not Nyul-standardised by default (signed phase: z-score only).
NYUL_SKIP_DEFAULT: tuple[str, ...] = ("phase",)
DEFAULT_CUTOFF = (0.01, 0.99)
LABEL_NAMES: tuple[str, ...] = ("thrombus", "lesion")


# --------------------------------------------------------------------------------------------------
# ADC units
# --------------------------------------------------------------------------------------------------
def detect_adc_units(values: np.ndarray, *, source: str = "ADC") -> tuple[float, str]:
    """(factor to reach 1e-3 mm^2/s, detected unit) from brain ADC values.

    Brain ADC (tissue + CSF) has a median of about 0.7-1.5 in 1e-3 mm^2/s. Scanners that store
    raw integers (0-4095) use 1e-6 mm^2/s (median about 700-1500) and some exports use mm^2/s
    (median about 0.001). Anything else is refused with a clear error instead of being guessed.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 100:
        raise PreprocessingError(f"{source}: too few positive ADC voxels in the brain ({v.size}) to detect units")
    med = float(np.median(v))
    if 0.15 <= med <= 6.0:
        return 1.0, ADC_UNIT
    if 150.0 <= med <= 6000.0:
        return 1e-3, "1e-6 mm^2/s (raw integer scale, 0-4095)"
    if 1.5e-4 <= med <= 6e-3:
        return 1e3, "mm^2/s"
    raise PreprocessingError(
        f"{source}: cannot tell the ADC unit (brain median {med:g}; expected about 1 in 1e-3 mm^2/s, "
        f"about 1000 in raw 1e-6 mm^2/s or about 0.001 in mm^2/s)")


# --------------------------------------------------------------------------------------------------
# landmarks
# --------------------------------------------------------------------------------------------------
def fit_landmarks(preproc_dir: str | Path, subjects, out_path: str | Path, *, sequences=None,
                  cutoff=DEFAULT_CUTOFF, nyul_skip=NYUL_SKIP_DEFAULT) -> Path:
    """Fit Nyul landmarks per sequence on ``subjects`` (the training split ONLY) and write JSON.

    ``preproc_dir/<subject>/<subject>_<seq>.nii.gz`` and ``..._brainmask.nii.gz`` are read (outputs of
    :func:`thrombseg.preprocessing.pipeline.preprocess_subject`). Sequences in ``nyul_skip`` or with no
    training patient get no landmarks (z-score only at apply time), and the JSON says so.
    """
    from torchio.transforms import HistogramStandardization

    preproc_dir = Path(preproc_dir)
    subjects = list(subjects)
    if not subjects:
        raise PreprocessingError(f"{out_path}: no training subjects given to fit the Nyul landmarks")
    from .pipeline import SEQUENCES

    seqs = list(sequences or SEQUENCES)
    out: dict = {"method": "Nyul & Udupa piecewise-linear (torchio.HistogramStandardization)",
                 "cutoff": list(cutoff), "standard_range": [0, 100], "fitted_on": subjects,
                 "landmarks": {}, "n_subjects": {}, "skipped": {}}
    for s in subjects:
        if not (preproc_dir / s / f"{s}_brainmask.nii.gz").is_file():
            raise PreprocessingError(f"{preproc_dir / s / f'{s}_brainmask.nii.gz'}: training subject {s} "
                                     "has no preprocessed brain mask")
    for seq in seqs:
        pairs = [(preproc_dir / s / f"{s}_{seq}.nii.gz", preproc_dir / s / f"{s}_brainmask.nii.gz")
                 for s in subjects if (preproc_dir / s / f"{s}_{seq}.nii.gz").is_file()]
        if seq in nyul_skip:
            out["skipped"][seq] = "z-score only by configuration"
            continue
        if not pairs:
            out["skipped"][seq] = "no training subject has it"
            continue
        lm = HistogramStandardization.train([str(p) for p, _ in pairs], cutoff=tuple(cutoff),
                                            mask_path=[str(m) for _, m in pairs], progress=False)
        out["landmarks"][seq] = [float(x) for x in lm]
        out["n_subjects"][seq] = len(pairs)
    return write_json(out, out_path)


def load_landmarks(path: str | Path) -> dict:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        d["landmarks"] = {k: np.asarray(v, float) for k, v in d["landmarks"].items()}
    except FileNotFoundError:
        raise PreprocessingError(f"{path}: landmarks file not found (run the fit-landmarks step first)") from None
    except Exception as exc:
        raise PreprocessingError(f"{path}: not a thrombseg landmarks file ({type(exc).__name__}: {exc})") from None
    return d


# --------------------------------------------------------------------------------------------------
# apply
# --------------------------------------------------------------------------------------------------
def nyul_apply(array: np.ndarray, mask: np.ndarray, landmarks: np.ndarray, cutoff=DEFAULT_CUTOFF) -> np.ndarray:
    """Nyul mapping of ``array`` with TorchIO, percentiles taken inside ``mask``."""
    import torch
    import torchio as tio

    subj = tio.Subject(img=tio.ScalarImage(tensor=torch.from_numpy(np.asarray(array, np.float32)[None])),
                       mask=tio.LabelMap(tensor=torch.from_numpy(np.asarray(mask, np.uint8)[None])))
    tr = tio.HistogramStandardization({"img": np.asarray(landmarks)}, masking_method="mask")
    return tr(subj)["img"].data[0].numpy().astype(np.float32)


def robust_zscore(array: np.ndarray, mask: np.ndarray, clip: float | None = 8.0,
                  keep: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(x - median) / (IQR / 1.349) with statistics from ``mask``; 0 outside ``keep`` (default
    ``mask``); clipped to +-clip."""
    x = np.asarray(array, np.float32)
    v = x[mask]
    med = float(np.median(v))
    q1, q3 = np.percentile(v, [25, 75])
    scale = float(q3 - q1) / 1.349
    if not scale > 1e-8:
        scale = float(1.4826 * np.median(np.abs(v - med)))
    if not scale > 1e-8:
        scale = float(v.std()) or 1.0
    z = (x - med) / scale
    if clip:
        z = np.clip(z, -clip, clip)
    z = np.where(mask if keep is None else (keep | mask), z, 0.0).astype(np.float32)
    return z, {"median": med, "scale": scale}


def harmonize_subject(preproc_dir: str | Path, subject: str, landmarks_path: str | Path,
                      out_dir: str | Path, config: dict | None = None) -> dict:
    """Harmonise one preprocessed patient and write float32 ``.npy`` arrays.

    Writes into ``out_dir/<subject>/``: ``<subject>_<seq>.npy`` (float32, harmonised),
    ``<subject>_brainmask.npy``, ``<subject>_icvmask.npy`` and ``<subject>_label-<thrombus|lesion>.npy``
    (uint8) and
    ``<subject>_arrays.json`` (shape, spacing, affine, axis order, per-sequence statistics).
    Arrays are in the NIfTI voxel order of the preprocessed grid (x, y, z; RAS). Statistics come from
    the brain mask; values are kept inside the intracranial mask and are 0 outside it.
    """
    from .pipeline import resolve_config

    subject = check_id(subject)  # it becomes a folder name under out_dir
    cfg = resolve_config(config)["harmonize"]
    t0 = time.perf_counter()
    src = Path(preproc_dir) / subject
    meta_path = src / f"{subject}_preproc.json"
    if not meta_path.is_file():
        raise PreprocessingError(f"{meta_path}: not found (run preprocess for {subject} first)")
    meta = json.loads(meta_path.read_text())
    lmk = load_landmarks(landmarks_path)
    dst = Path(out_dir) / subject
    mask_img = load_image(src / f"{subject}_brainmask.nii.gz", what="brain mask")
    mask = mask_img.numpy() > 0.5
    icv_path = src / f"{subject}_icvmask.nii.gz"
    icv = (load_image(icv_path, what="intracranial mask", allow_constant=True).numpy() > 0.5) | mask \
        if icv_path.is_file() else mask
    info: dict = {"subject": subject, "center": meta.get("center", ""), "shape": list(mask.shape),
                  "spacing_mm": list(meta["grid"]["spacing_mm"]), "affine_ras": meta["grid"]["affine_ras"],
                  "axis_order": "x,y,z (NIfTI voxel order, RAS+)", "dtype": "float32",
                  "landmarks": str(landmarks_path), "sequences": {}, "labels": {}}
    for seq in meta["sequences"]:
        img = load_image(src / f"{subject}_{seq}.nii.gz", what=f"preprocessed {seq}", allow_constant=True)
        a = img.numpy()
        if a.shape != mask.shape:
            raise PreprocessingError(f"{src / f'{subject}_{seq}.nii.gz'}: shape {a.shape} differs from the "
                                     f"brain mask {mask.shape}")
        step: dict = {}
        if seq == "adc":
            factor, unit = detect_adc_units(a[mask], source=str(src / f"{subject}_adc.nii.gz"))
            a = a * factor
            step["adc_unit_detected"], step["adc_factor"] = unit, factor
        lm = lmk["landmarks"].get(seq)
        if lm is not None and seq not in cfg["nyul_skip"]:
            a = nyul_apply(a, mask, lm, tuple(lmk.get("cutoff", DEFAULT_CUTOFF)))
            step["nyul"] = True
        else:
            step["nyul"] = False
        z, stats = robust_zscore(a, mask, cfg["clip"], keep=icv)
        step.update(stats)
        write_npy(z, dst / f"{subject}_{seq}.npy")
        info["sequences"][seq] = step
    write_npy(mask.astype(np.uint8), dst / f"{subject}_brainmask.npy")
    write_npy(icv.astype(np.uint8), dst / f"{subject}_icvmask.npy")
    for name in LABEL_NAMES:
        p = src / f"{subject}_{name}.nii.gz"
        if p.is_file():
            lab = load_image(p, what=f"{name} label", allow_constant=True).numpy() > 0.5
            write_npy(lab.astype(np.uint8), dst / f"{subject}_label-{name}.npy")
            info["labels"][name] = int(lab.sum())
    info["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(info, dst / f"{subject}_arrays.json")
    return info
