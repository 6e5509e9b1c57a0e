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
    <out>/<subject>_prediction.json         sequences used, volumes, components, timings, device
    <out>/<subject>_qc.png                  preprocessing QC montage (when the config draws it)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from ..core.fs import atomic_dir, check_id, check_output_dir
from ..sheet import SEQUENCES
from ..core.sequences import FALLBACK
from .predict import InferenceConfig, InferenceError

SUMMARY = "{subject}_prediction.json"


def known_sequences(modalities) -> dict[str, str]:
    """Sequence -> model channel it feeds (a channel's own sequence or its fallback, e.g. t2star -> swi)."""
    out: dict[str, str] = {}
    for m in modalities:
        for s in (m, *FALLBACK.get(m, ())):
            out.setdefault(s, m)
    return out


def check_sequences(given, thrombus_modalities, infarct_modalities=(), model_name="the thrombus model") -> None:
    """Raise :class:`InferenceError` for a sequence no model knows, or when none feeds the thrombus model."""
    thr = known_sequences(thrombus_modalities)
    known = {**known_sequences(infarct_modalities), **thr}
    bad = sorted(set(given) - set(known))
    knows = ", ".join(f"{s} (as {m})" if s != m else s for s, m in thr.items())
    if bad:
        extra = sorted(set(known) - set(thr))
        raise InferenceError(f"{model_name} was not trained with {', '.join(bad)}: it knows {knows}"
                             + (f"; the infarct model also uses {', '.join(extra)}" if extra else "")
                             + " (leave the other sequences out)")
    if not set(given) & set(thr):
        raise InferenceError(f"none of the given sequences ({', '.join(sorted(given))}) feeds {model_name}: "
                             f"it needs at least one of {knows}")


def _check_inputs(images: dict) -> dict[str, Path]:
    import nibabel as nib

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


def _reorient_like(data: np.ndarray, canon_affine: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Undo ingest's ``nib.as_closest_canonical``: canonical (RAS) voxels -> the original file's axis order."""
    import nibabel as nib
    from nibabel import orientations as o

    img = nib.Nifti1Image(data, canon_affine)
    back = img.as_reoriented(o.ornt_transform(o.io_orientation(canon_affine), o.io_orientation(original_affine)))
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
    import nibabel as nib

    from ..preprocessing._io import like, load_image, nifti_affine
    from ..preprocessing.registration import move_label, resample

    canon = load_image(canonical_path, what="ingested image", allow_constant=True)
    inv = np.linalg.inv(np.asarray(matrix, float)) if matrix is not None else None  # moving -> fixed
    orig_aff = nib.load(str(original_path)).affine
    out = {}
    for name, arr in grid_arrays.items():
        img = like(grid_ref, np.asarray(arr, np.float32))
        moved = move_label(img, canon, inv) if name.endswith("_mask") else resample(img, canon, inv, "linear")
        a = moved.numpy()
        a = (a > 0.5).astype(np.uint8) if name.endswith("_mask") else np.clip(a, 0, 1).astype(np.float32)
        out[name] = (_reorient_like(a, nifti_affine(canon), orig_aff), orig_aff)
    return out


def _save(arr: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(arr, dtype=dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def predict_patient(images: dict, out_dir, thrombus_model, landmarks, infarct_model=None,
                    preprocess_config: dict | None = None, icfg: InferenceConfig | None = None,
                    subject: str = "patient", center: str = "", keep_work: bool = False,
                    overwrite: bool = False) -> dict:
    """Predict one patient from raw NIfTIs (see module doc for the outputs).

    Args:
        images: sequence name (``thrombseg.sheet.SEQUENCES``) -> NIfTI path; any subset the model knows.
        out_dir: the patient's output folder: new or empty, or (``overwrite``) a previous thrombseg
            output holding nothing else (see ``thrombseg.core.fs``).
        thrombus_model, infarct_model: ``model.pt`` files of the workflow (infarct optional).
        landmarks: the workflow's Nyul landmarks JSON (``harmonization/landmarks.json``).
        preprocess_config: the workflow config or its ``preprocess:`` section (None: defaults).
        icfg: threshold / post-processing / TTA / device options.
        keep_work: keep the intermediate ingest/preprocessed/harmonized folders under ``<out>/work``.

    Returns:
        The summary also written to ``<out>/<subject>_prediction.json``.

    Raises:
        InferenceError, PreprocessingError, IngestError: bad input; the message names the file or sequence.
    """
    import torch

    from ..ingest import IngestError, ingest_subject
    from ..preprocessing._io import PreprocessingError, load_image, nifti_affine, set_threads
    from ..preprocessing.harmonize import harmonize_subject, load_landmarks
    from ..preprocessing.pipeline import preprocess_subject, resolve_config
    from ..core.case import load_case
    from .predict import case_sequences, inference_device, load_checked, predict_case

    icfg = icfg or InferenceConfig()
    t_all = time.perf_counter()
    timings: dict[str, float] = {}

    def tick(name, t0):
        timings[name] = round(time.perf_counter() - t0, 3)

    # ---- everything that can be checked cheaply is checked before any heavy work --------------------
    t0 = time.perf_counter()
    check_id(subject or "")
    paths = _check_inputs(images)
    inputs = [*paths.values(), thrombus_model, infarct_model, landmarks]
    out_dir = check_output_dir(out_dir, overwrite, inputs)
    cfg = resolve_config(preprocess_config)
    set_threads(cfg["threads"], cfg["deterministic"])
    device = inference_device(icfg.device)
    lmk = load_landmarks(landmarks)  # clear error for a missing or foreign file
    warnings = [f"{seq}: no Nyul landmarks in {landmarks} (z-score only)" for seq in paths
                if seq not in lmk["landmarks"] and seq not in cfg["harmonize"]["nyul_skip"]]
    thr = load_checked(thrombus_model, device, "thrombus")
    inf = load_checked(infarct_model, device, "infarct") if infarct_model else None
    check_sequences(paths, thr[1].modalities, inf[1].modalities if inf else (), f"the thrombus model {thrombus_model}")
    tick("checks_and_models", t0)

    with atomic_dir(out_dir, overwrite, inputs, command="predict") as stage:
        work = stage / "work"
        try:
            t0 = time.perf_counter()
            row = {"subject": subject, "center": center, "split": ""} | {s: str(p) for s, p in paths.items()}
            ingest_subject(row, work / "sheet.tsv", work / "ingest" / subject)
            tick("ingest", t0)
            t0 = time.perf_counter()
            meta = preprocess_subject(work / "ingest", subject, work / "preprocessed", cfg)
            tick("preprocess", t0)
            t0 = time.perf_counter()
            harmonize_subject(work / "preprocessed", subject, landmarks, work / "harmonized", cfg)
            tick("harmonize", t0)

            t0 = time.perf_counter()
            case = load_case(work / "harmonized" / subject, subject, center, mmap=False)
            used = case_sequences(case, thr[1].modalities)
            with torch.inference_mode():
                res = predict_case(case, thr, inf, icfg, device=device)
            tick("predict", t0)

            # ---- outputs on the reference grid ---------------------------------------------------------
            t0 = time.perf_counter()
            pre = work / "preprocessed" / subject
            grid = load_image(pre / f"{subject}_brainmask.nii.gz", what="brain mask", allow_constant=True)
            gaff = nifti_affine(grid)
            arrays = {"thrombus_prob": res["prob"], "thrombus_mask": res["mask"]}
            if res["infarct"] is not None:
                arrays["infarct_mask"] = res["infarct"]
            for name, arr in arrays.items():
                _save(arr, gaff, stage / f"{subject}_{name}.nii.gz", np.float32 if name.endswith("prob") else np.uint8)
            if (pre / f"{subject}_qc.png").is_file():
                shutil.copyfile(pre / f"{subject}_qc.png", stage / f"{subject}_qc.png")
            tick("write_grid", t0)

            # ---- back to each input's own space ----------------------------------------------------------
            t0 = time.perf_counter()
            (stage / "native").mkdir()
            native = {}
            for seq, src in paths.items():
                mat = (meta["registration"].get(seq) or {}).get("matrix")
                moved = to_native(arrays, grid, work / "ingest" / subject / f"{subject}_{seq}.nii.gz", src, mat)
                native[seq] = {}
                for name, (arr, aff) in moved.items():
                    f = stage / "native" / f"{subject}_space-{seq}_{name}.nii.gz"
                    _save(arr, aff, f, np.float32 if name.endswith("prob") else np.uint8)
                    native[seq][name] = f"native/{f.name}"
            tick("native", t0)

            import cc3d

            vox = float(np.prod(case.spacing))
            mask = np.asarray(res["mask"]) > 0
            summary = {
                "subject": subject, "inputs": {s: str(p) for s, p in paths.items()},
                "thrombus_model": str(thrombus_model), "infarct_model": str(infarct_model) if infarct_model else None,
                "landmarks": str(landmarks), "model_channels": list(thr[1].modalities),
                "sequences_used": used,
                "infarct_sequences_used": case_sequences(case, inf[1].modalities) if res["infarct"] is not None else [],
                "reference": meta["reference"], "grid": meta["grid"],
                "thrombus_volume_mm3": round(float(mask.sum() * vox), 3),
                "thrombus_n_components": int(cc3d.connected_components(mask.astype(np.uint8), connectivity=26,
                                                                       return_N=True)[1]),
                "thrombus_raw_n_components": int(cc3d.connected_components(np.asarray(res["raw"], np.uint8),
                                                                           connectivity=26, return_N=True)[1]),
                "thrombus_max_prob": round(float(np.max(res["prob"])), 4),
                "infarct_volume_mm3": (round(float(np.asarray(res["infarct"]).sum() * vox), 3)
                                       if res["infarct"] is not None else None),
                "postprocess": res["info"], "inference": vars(icfg), "device": str(device),
                "threads": torch.get_num_threads(), "warnings": warnings + meta["warnings"],
                "outputs": {n: f"{subject}_{n}.nii.gz" for n in arrays} | {"native": native},
            }
            if not keep_work:
                shutil.rmtree(work)
            timings["total"] = round(time.perf_counter() - t_all, 3)
            summary["timings_s"] = timings | {"preprocess_steps": meta["timings_s"]}
            (stage / SUMMARY.format(subject=subject)).write_text(json.dumps(summary, indent=2, default=_json) + "\n")
        except (PreprocessingError, IngestError) as exc:
            raise type(exc)(_user_paths(str(exc), work, subject, paths)) from None
    return summary


def _user_paths(msg: str, work: Path, subject: str, paths: dict) -> str:
    """Name the user's file, not the hidden working copy, in an error message."""
    for seq, p in paths.items():
        msg = msg.replace(str(work / "ingest" / subject / f"{subject}_{seq}.nii.gz"), str(p))
        msg = msg.replace(str(work / "preprocessed" / subject / f"{subject}_{seq}.nii.gz"),
                          f"{p} (after preprocessing)")
    return msg.replace(str(work) + "/", "")


def _json(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
