"""Predict one new patient from raw NIfTIs: ingest -> preprocess -> harmonize -> predict -> native space.

Any subset of the sequences the model knows may be given. The patient goes through exactly the
workflow's steps (the same functions, the stored Nyul landmarks, the workflow's ``preprocess:``
config), and the masks come back both on the reference grid and on each input image's own grid:
same array shape, axis order and affine as the user's file, so they can be compared voxel-wise with
an annotation drawn on that file.

Output folder (built in a hidden temporary sibling and renamed at the end, so a failure never leaves
a half-written folder)::

    <out>/<subject>_thrombus_prob.nii.gz    float32, reference grid (the preprocessed, cropped grid)
    <out>/<subject>_thrombus_mask.nii.gz    uint8, post-processed
    <out>/<subject>_infarct_mask.nii.gz     uint8 (with an infarct model and DWI/ADC/FLAIR)
    <out>/native/<subject>_space-<seq>_{thrombus_prob,thrombus_mask,infarct_mask}.nii.gz
    <out>/<subject>_prediction.json         sequences used, thrombus present or not (and its probability
                                            with ``selection: score``), volumes, components, timings, device,
                                            ``out_of_distribution`` and ``ood_warnings``: how the inputs
                                            compare with the training patients' profile stored in the
                                            landmarks (thrombseg.preprocessing.ood; null and a note in
                                            ``warnings`` for landmarks without a profile)
    <out>/<subject>_qc.png                  preprocessing QC montage (when the config draws it)
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel import orientations

from ..core.case import Case, load_case
from ..core.fs import atomic_dir, check_id, check_output_dir
from ..core.io import copy_file, write_array_nifti, write_json
from ..core.sequences import SEQUENCES
from ..core.timing import StepTimer
from ..evaluation.metrics import label_components
from ..ingest import IngestError, ingest_subject
from ..preprocessing._io import PreprocessingError, like, load_image, nifti_affine, set_threads
from ..preprocessing.harmonize import harmonize_subject, load_landmarks
from ..preprocessing.pipeline import preprocess_subject
from ..preprocessing.registration import move_label, resample
from ..preprocessing.settings import resolve_config
from .predict import LoadedModel, inference_device, load_checked, predict_case
from .sequences import case_sequences, check_sequences
from .settings import InferenceConfig, InferenceError

SUMMARY = "{subject}_prediction.json"

log = logging.getLogger("thrombseg.inference")


@dataclass
class _Run:
    """One prediction's checked inputs, settings and loaded models."""

    subject: str
    center: str
    images: dict[str, Path]  # sequence -> the user's file
    out_dir: Path
    inputs: list  # every file the prediction reads: never replaced by its output
    thrombus_model: Path | str
    infarct_model: Path | str | None
    landmarks: Path | str
    preprocess: dict  # the resolved ``preprocess:`` config
    icfg: InferenceConfig
    device: torch.device
    thrombus: LoadedModel
    infarct: LoadedModel | None
    warnings: list[str]


def predict_patient(images: dict, out_dir, thrombus_model, landmarks, infarct_model=None,
                    preprocess_config: dict | None = None, icfg: InferenceConfig | None = None,
                    subject: str = "patient", center: str = "", keep_work: bool = False,
                    overwrite: bool = False) -> dict:
    """Predict one patient from raw NIfTIs (see module doc for the outputs).

    Args:
        images: sequence name (``thrombseg.core.sequences.SEQUENCES``) -> NIfTI path; any subset the model knows.
        out_dir: the patient's output folder: new or empty, or (``overwrite``) a previous thrombseg
            output holding nothing else (see ``thrombseg.core.fs``).
        thrombus_model, infarct_model: ``model.pt`` files of the workflow (infarct optional).
        landmarks: the workflow's Nyul landmarks JSON (``harmonization/<protocol>/landmarks.json``).
        preprocess_config: the workflow config or its ``preprocess:`` section (None: defaults).
        icfg: threshold / post-processing / TTA / device options.
        keep_work: keep the intermediate ingest/preprocessed/harmonized folders under ``<out>/work``.

    Returns:
        The summary also written to ``<out>/<subject>_prediction.json``.

    Raises:
        InferenceError, PreprocessingError, IngestError: bad input; the message names the file or sequence.
    """
    started = time.perf_counter()
    timings = StepTimer()
    with timings.step("checks_and_models"):
        run = _checked_run(images, out_dir, thrombus_model, landmarks, infarct_model, preprocess_config,
                           icfg or InferenceConfig(), subject, center, overwrite)
    with atomic_dir(run.out_dir, overwrite, run.inputs, command="predict") as stage:
        work = stage / "work"
        try:
            meta = _prepare_case(run, work, timings)
            with timings.step("predict"):
                case = load_case(work / "harmonized" / subject, subject, center, mmap=False)
                result = predict_case(case, run.thrombus, run.infarct, run.icfg, device=run.device)
            with timings.step("write_grid"):
                arrays, grid = _write_grid_outputs(run, result, work, stage)
            with timings.step("native"):
                native = _write_native_outputs(run, arrays, grid, meta, work, stage)
            summary = _summary(run, case, result, meta, arrays, native)
            if not keep_work:
                shutil.rmtree(work)
            timings["total"] = round(time.perf_counter() - started, 3)
            summary["timings_s"] = timings | {"preprocess_steps": meta["timings_s"]}
            write_json(summary, stage / SUMMARY.format(subject=subject))
        except (PreprocessingError, IngestError) as exc:
            raise type(exc)(_user_paths(str(exc), work, subject, run.images)) from None
    return summary


def _checked_run(images, out_dir, thrombus_model, landmarks, infarct_model, preprocess_config,
                 icfg: InferenceConfig, subject: str, center: str, overwrite: bool) -> _Run:
    """Check everything that is cheap to check before any heavy work, and load the models."""
    check_id(subject or "")
    paths = _check_inputs(images)
    inputs = [*paths.values(), thrombus_model, infarct_model, landmarks]
    out_dir = check_output_dir(out_dir, overwrite, inputs)
    preprocess = resolve_config(preprocess_config)
    set_threads(preprocess["threads"], preprocess["deterministic"])
    device = inference_device(icfg.device)
    fitted = load_landmarks(landmarks)  # clear error for a missing or foreign file
    warnings = [f"{seq}: no Nyul landmarks in {landmarks} (z-score only)" for seq in paths
                if seq not in fitted["landmarks"] and seq not in preprocess["harmonize"]["nyul_skip"]]
    thrombus = load_checked(thrombus_model, device, "thrombus")
    infarct = load_checked(infarct_model, device, "infarct") if infarct_model else None
    check_sequences(paths, thrombus.spec.modalities, infarct.spec.modalities if infarct else (),
                    f"the thrombus model {thrombus_model}")
    return _Run(subject, center, paths, out_dir, inputs, thrombus_model, infarct_model, landmarks, preprocess,
                icfg, device, thrombus, infarct, warnings)


def _check_inputs(images: dict) -> dict[str, Path]:
    """The user's files by sequence, each checked to be a readable 3-D NIfTI of a known sequence."""
    if not images:
        raise InferenceError("no input image given (give at least one of " + ", ".join(SEQUENCES) + ")")
    out = {}
    for seq, path in images.items():
        if seq not in SEQUENCES:
            raise InferenceError(f"unknown sequence {seq!r} (known: {', '.join(SEQUENCES)})")
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise InferenceError(f"{path}: {seq} image not found")
        try:
            shape = nib.load(str(p)).shape  # header only: cheap; voxel problems surface at ingest
        except Exception as exc:
            raise InferenceError(f"{path}: {seq} image is not a readable NIfTI ({type(exc).__name__}: {exc})") from None
        if len([n for n in shape if n != 1]) > 3 or len(shape) < 3:
            raise InferenceError(f"{path}: {seq} image must be 3-D, got shape {tuple(shape)}")
        out[seq] = p
    return out


def _prepare_case(run: _Run, work: Path, timings: StepTimer) -> dict:
    """Ingest, preprocess and harmonize the patient under ``work`` as the workflow does; the preprocessing record."""
    subject = run.subject
    with timings.step("ingest"):
        row = {"subject": subject, "center": run.center, "split": ""} | {s: str(p) for s, p in run.images.items()}
        ingest_subject(row, work / "sheet.tsv", work / "ingest" / subject)
    with timings.step("preprocess"):
        meta = preprocess_subject(work / "ingest", subject, work / "preprocessed", run.preprocess)
    with timings.step("harmonize"):
        ood = harmonize_subject(work / "preprocessed", subject, run.landmarks, work / "harmonized",
                                run.preprocess)["ood"]
    for line in ood["warnings"]:
        log.warning("%s: out of distribution: %s", subject, line)
    meta["ood"] = ood  # read by _summary; the preprocessing record on disk is unchanged
    return meta


def _output_dtype(name: str):
    return np.float32 if name.endswith("prob") else np.uint8


def _write_grid_outputs(run: _Run, result: dict, work: Path, stage: Path) -> tuple[dict, object]:
    """The maps on the reference grid (and the QC montage); returns them by name with the grid image."""
    preprocessed = work / "preprocessed" / run.subject
    grid = load_image(preprocessed / f"{run.subject}_brainmask.nii.gz", what="brain mask", allow_constant=True)
    arrays = {"thrombus_prob": result["prob"], "thrombus_mask": result["mask"]}
    if result["infarct"] is not None:
        arrays["infarct_mask"] = result["infarct"]
    for name, arr in arrays.items():
        write_array_nifti(arr, nifti_affine(grid), stage / f"{run.subject}_{name}.nii.gz", _output_dtype(name))
    qc = preprocessed / f"{run.subject}_qc.png"
    if qc.is_file():
        copy_file(qc, stage / qc.name)
    return arrays, grid


def _write_native_outputs(run: _Run, arrays: dict, grid, meta: dict, work: Path, stage: Path) -> dict:
    """The maps on each input image's own grid; returns ``{sequence: {name: relative path}}``."""
    native: dict[str, dict[str, str]] = {}
    for seq, src in run.images.items():
        matrix = (meta["registration"].get(seq) or {}).get("matrix")
        ingested = work / "ingest" / run.subject / f"{run.subject}_{seq}.nii.gz"
        native[seq] = {}
        for name, (arr, affine) in to_native(arrays, grid, ingested, src, matrix).items():
            path = stage / "native" / f"{run.subject}_space-{seq}_{name}.nii.gz"
            write_array_nifti(arr, affine, path, _output_dtype(name))
            native[seq][name] = f"native/{path.name}"
    return native


def _summary(run: _Run, case: Case, result: dict, meta: dict, arrays: dict, native: dict) -> dict:
    """What was predicted, from what, with which settings (``<subject>_prediction.json``, timings added last)."""
    voxel_mm3 = float(np.prod(case.spacing))
    mask = np.asarray(result["mask"]) > 0
    infarct = result["infarct"]
    ood = meta["ood"]
    return {
        "subject": run.subject, "inputs": {s: str(p) for s, p in run.images.items()},
        "thrombus_model": str(run.thrombus_model),
        "infarct_model": str(run.infarct_model) if run.infarct_model else None,
        "landmarks": str(run.landmarks), "model_channels": list(run.thrombus.spec.modalities),
        "sequences_used": case_sequences(case, run.thrombus.spec.modalities),
        "infarct_sequences_used": case_sequences(case, run.infarct.spec.modalities) if infarct is not None else [],
        "reference": meta["reference"], "grid": meta["grid"],
        "thrombus_present": bool(mask.any()),  # with selection: score, False is the answer "no thrombus"
        "presence_prob": None if result["presence_prob"] is None else round(float(result["presence_prob"]), 4),
        "thrombus_volume_mm3": round(float(mask.sum() * voxel_mm3), 3),
        "thrombus_n_components": label_components(mask)[1],
        "thrombus_raw_n_components": label_components(np.asarray(result["raw"]))[1],
        "thrombus_max_prob": round(float(np.max(result["prob"])), 4),
        "infarct_volume_mm3": round(float(np.asarray(infarct).sum() * voxel_mm3), 3) if infarct is not None else None,
        "postprocess": result["info"], "inference": vars(run.icfg), "device": str(run.device),
        "threads": torch.get_num_threads(),
        "warnings": run.warnings + meta["warnings"] + ([ood["note"]] if ood["note"] else []),
        "out_of_distribution": ood["out_of_distribution"], "ood_warnings": ood["warnings"],
        "outputs": {n: f"{run.subject}_{n}.nii.gz" for n in arrays} | {"native": native},
    }


def _reorient_like(data: np.ndarray, canon_affine: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Undo ingest's ``nib.as_closest_canonical``: canonical (RAS) voxels -> the original file's axis order."""
    img = nib.Nifti1Image(data, canon_affine)
    back = img.as_reoriented(orientations.ornt_transform(orientations.io_orientation(canon_affine),
                                                       orientations.io_orientation(original_affine)))
    if not np.allclose(back.affine, original_affine, atol=1e-3):  # would mean ingest changed its convention
        raise InferenceError(f"internal: native affine mismatch {back.affine.tolist()} vs {original_affine.tolist()}")
    return np.asarray(back.dataobj)


def to_native(grid_arrays: dict[str, np.ndarray], grid_ref, canonical_path, original_path, matrix) -> dict:
    """Arrays on the preprocessed grid -> arrays on one input image's own voxel grid.

    Args:
        grid_arrays: name -> array (x, y, z) on the grid; names ending in ``_mask`` are labels (moved
            volume-preserving by ``move_label``, so a tiny thrombus survives), others are resampled linearly.
        grid_ref: ANTs image with the preprocessed grid's geometry.
        canonical_path: the ingested (canonical RAS) image of the sequence.
        original_path: the user's file (its affine and axis order are restored).
        matrix: the sequence's fixed (reference) -> moving 4x4 LPS matrix of ``_preproc.json`` (None: reference).

    Returns:
        name -> (array in the original file's voxel order, the original affine).
    """
    canon = load_image(canonical_path, what="ingested image", allow_constant=True)
    inverse = np.linalg.inv(np.asarray(matrix, float)) if matrix is not None else None  # moving -> fixed
    original_affine = nib.load(str(original_path)).affine
    out = {}
    for name, arr in grid_arrays.items():
        img = like(grid_ref, np.asarray(arr, np.float32))
        is_mask = name.endswith("_mask")
        moved = (move_label(img, canon, inverse) if is_mask else resample(img, canon, inverse, "linear")).numpy()
        moved = (moved > 0.5).astype(np.uint8) if is_mask else np.clip(moved, 0, 1).astype(np.float32)
        out[name] = (_reorient_like(moved, nifti_affine(canon), original_affine), original_affine)
    return out


def _user_paths(msg: str, work: Path, subject: str, paths: dict) -> str:
    """Name the user's file, not the hidden working copy, in an error message."""
    for seq, p in paths.items():
        msg = msg.replace(str(work / "ingest" / subject / f"{subject}_{seq}.nii.gz"), str(p))
        msg = msg.replace(str(work / "preprocessed" / subject / f"{subject}_{seq}.nii.gz"),
                          f"{p} (after preprocessing)")
    return msg.replace(str(work) + "/", "")
