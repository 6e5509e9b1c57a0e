"""Site harmonisation: Nyul histogram standardisation (TorchIO) fitted on training patients only,
then robust z-scoring inside the brain; explicit ADC unit handling.

Two steps, matching the workflow's rules:

* :func:`fit_landmarks` (one gather rule): per sequence, TorchIO's
  ``HistogramStandardization.train`` on the training-split patients' preprocessed images inside
  their brain masks; writes one JSON landmarks file, with the training patients' input profile
  (:mod:`.ood`) that predictions check a new case against.
* :func:`harmonize_subject` (one rule per patient, every patient and every center, seen in training
  or not): applies the landmarks, robust-z-scores in the brain and writes float32 ``.npy`` arrays for
  memory-mapped reads by training (``np.load(path, mmap_mode="r")``), and records how the patient's
  inputs compare with the training profile (``ood`` in ``<subject>_arrays.json``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torchio as tio

from ..core.fs import check_id
from ..core.io import write_json, write_npy
from ..core.sequences import SEQUENCES, TARGET_FILES, TARGETS
from ._io import PreprocessingError, label_file, load_image
from .ood import PROFILE_VERSION, build_profile, case_record, intensity_landmarks, landmark_percentiles, patient_stats
from .settings import DEFAULT_CUTOFF, NYUL_SKIP_DEFAULT, resolve_config
from .units import detect_adc_units


# --------------------------------------------------------------------------------------------------
# landmarks
# --------------------------------------------------------------------------------------------------
def fit_landmarks(preproc_dir: str | Path, subjects, out_path: str | Path, *, sequences=None,
                  cutoff=DEFAULT_CUTOFF, nyul_skip=NYUL_SKIP_DEFAULT) -> Path:
    """Fit Nyul landmarks per sequence on ``subjects`` (the training split ONLY) and write JSON.

    ``preproc_dir/<subject>/<subject>_<seq>.nii.gz`` and ``..._brainmask.nii.gz`` are read (outputs of
    :func:`thrombseg.preprocessing.pipeline.preprocess_subject`). Sequences in ``nyul_skip`` or with no
    training patient get no landmarks (z-score only at apply time), and the JSON says so.
    ``profile`` holds the same patients' input profile (:func:`training_profile`, checked by :mod:`.ood`).
    """
    preproc_dir = Path(preproc_dir)
    subjects = list(subjects)
    if not subjects:
        raise PreprocessingError(f"{out_path}: no training subjects given to fit the Nyul landmarks")
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
        lm = tio.HistogramStandardization.train([str(p) for p, _ in pairs], cutoff=tuple(cutoff),
                                            mask_path=[str(m) for _, m in pairs], progress=False)
        out["landmarks"][seq] = [float(x) for x in lm]
        out["n_subjects"][seq] = len(pairs)
    out["profile"] = training_profile(preproc_dir, subjects, seqs, cutoff)
    return write_json(out, out_path)


def training_profile(preproc_dir: str | Path, subjects, sequences, cutoff) -> dict:
    """The input profile (:func:`thrombseg.preprocessing.ood.build_profile`) of the preprocessed
    ``subjects`` (the training split only)."""
    pct = landmark_percentiles(cutoff)
    return build_profile([_patient_stats(Path(preproc_dir) / s, s, sequences, pct) for s in subjects], pct, sequences)


def _patient_stats(src: Path, subject: str, sequences, percentiles) -> dict:
    """:func:`thrombseg.preprocessing.ood.patient_stats` of one preprocessed patient, from its files."""
    mask = load_image(src / f"{subject}_brainmask.nii.gz", what="brain mask")
    brain = mask.numpy() > 0.5
    present = [s for s in sequences if (src / f"{subject}_{s}.nii.gz").is_file()]
    intensity = {s: intensity_landmarks(load_image(src / f"{subject}_{s}.nii.gz", what=f"preprocessed {s}",
                                                   allow_constant=True).numpy()[brain], percentiles)
                 for s in present}
    return patient_stats(present, brain, mask.spacing, intensity)


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
    ``<subject>_brainmask.npy``, ``<subject>_icvmask.npy`` and ``<subject>_label-<thrombus|infarct>.npy``
    (uint8) and
    ``<subject>_arrays.json`` (shape, spacing, affine, axis order, per-sequence statistics, and ``ood``:
    the patient against the landmarks' training profile, see :func:`thrombseg.preprocessing.ood.case_record`).
    Arrays are in the NIfTI voxel order of the preprocessed grid (x, y, z; RAS). Statistics come from
    the brain mask; values are kept inside the intracranial mask and are 0 outside it.
    """
    subject = check_id(subject)  # it becomes a folder name under out_dir
    cfg = resolve_config(config)["harmonize"]
    t0 = time.perf_counter()
    src = Path(preproc_dir) / subject
    dst = Path(out_dir) / subject
    meta = _read_preproc_meta(src, subject)
    landmarks = load_landmarks(landmarks_path)
    brain, icv = _read_masks(src, subject)
    info: dict = {"subject": subject, "center": meta.get("center", ""), "shape": list(brain.shape),
                  "spacing_mm": list(meta["grid"]["spacing_mm"]), "affine_ras": meta["grid"]["affine_ras"],
                  "axis_order": "x,y,z (NIfTI voxel order, RAS+)", "dtype": "float32",
                  "landmarks": str(landmarks_path), "sequences": {}, "labels": {}}
    profile = landmarks.get("profile") if isinstance(landmarks.get("profile"), dict) else {}
    percentiles = profile.get("percentiles") if profile.get("version") == PROFILE_VERSION else None
    raw: dict[str, list[float]] = {}  # the intensity landmarks the profile compares, taken before harmonizing
    for seq in meta["sequences"]:
        z, info["sequences"][seq] = _harmonize_sequence(src / f"{subject}_{seq}.nii.gz", seq, brain, icv,
                                                         landmarks, cfg, percentiles, raw)
        write_npy(z, dst / f"{subject}_{seq}.npy")
    stats = patient_stats(meta["sequences"], brain, meta["grid"]["spacing_mm"], raw)
    info["ood"] = case_record(stats, profile, str(landmarks_path)) | {"stats": stats}
    write_npy(brain.astype(np.uint8), dst / f"{subject}_brainmask.npy")
    write_npy(icv.astype(np.uint8), dst / f"{subject}_icvmask.npy")
    info["labels"] = _write_labels(src, dst, subject)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(info, dst / f"{subject}_arrays.json")
    return info


def _read_preproc_meta(src: Path, subject: str) -> dict:
    """The patient's ``<subject>_preproc.json`` (PreprocessingError when preprocess has not run)."""
    meta_path = src / f"{subject}_preproc.json"
    if not meta_path.is_file():
        raise PreprocessingError(f"{meta_path}: not found (run preprocess for {subject} first)")
    return json.loads(meta_path.read_text())


def _read_masks(src: Path, subject: str) -> tuple[np.ndarray, np.ndarray]:
    """(brain, intracranial) masks; the intracranial one always holds the brain (brain alone when absent)."""
    brain = load_image(src / f"{subject}_brainmask.nii.gz", what="brain mask").numpy() > 0.5
    icv_path = src / f"{subject}_icvmask.nii.gz"
    if not icv_path.is_file():
        return brain, brain
    return brain, (load_image(icv_path, what="intracranial mask", allow_constant=True).numpy() > 0.5) | brain


def _harmonize_sequence(path: Path, seq: str, brain: np.ndarray, icv: np.ndarray, landmarks: dict,
                        cfg: dict, percentiles=None, raw: dict | None = None) -> tuple[np.ndarray, dict]:
    """(harmonised array, its statistics) of one sequence: ADC units, Nyul mapping, robust z-score.
    With ``percentiles``, ``raw[seq]`` gets the image's intensity landmarks as the profile takes them."""
    a = load_image(path, what=f"preprocessed {seq}", allow_constant=True).numpy()
    if a.shape != brain.shape:
        raise PreprocessingError(f"{path}: shape {a.shape} differs from the brain mask {brain.shape}")
    if percentiles is not None and raw is not None:
        raw[seq] = intensity_landmarks(a[brain], percentiles)
    step: dict = {}
    if seq == "adc":
        factor, unit = detect_adc_units(a[brain], source=str(path))
        a = a * factor
        step["adc_unit_detected"], step["adc_factor"] = unit, factor
    lm = landmarks["landmarks"].get(seq)
    step["nyul"] = lm is not None and seq not in cfg["nyul_skip"]
    if step["nyul"]:
        a = nyul_apply(a, brain, lm, tuple(landmarks.get("cutoff", DEFAULT_CUTOFF)))
    z, stats = robust_zscore(a, brain, cfg["clip"], keep=icv)
    step.update(stats)
    return z, step


def _write_labels(src: Path, dst: Path, subject: str) -> dict[str, int]:
    """Write each preprocessed label as ``<subject>_label-<target>.npy``; {target: voxel count}."""
    counts = {}
    for target in TARGETS:
        p = label_file(src, subject, target)
        if p is not None:
            lab = load_image(p, what=f"{target} label", allow_constant=True).numpy() > 0.5
            write_npy(lab.astype(np.uint8), dst / f"{subject}_{TARGET_FILES[target]}.npy")
            counts[target] = int(lab.sum())
    return counts
