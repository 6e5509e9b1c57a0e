"""One patient through preprocessing: skull strip -> co-register -> crop -> N4 -> labels -> QC.

``preprocess_subject(ingest_dir, subject, out_dir, config)`` reads the ingest stage's canonical
NIfTIs ``<ingest_dir>/<subject>/<subject>_<seq>.nii.gz`` (+ ``_thrombus``/``_lesion`` labels and the
``_ingest.json`` sidecar) and writes, into ``<out_dir>/<subject>/`` (the whole folder appears at once:
it is built in a hidden temporary folder and renamed):

* ``<subject>_<seq>.nii.gz``   co-registered, N4-corrected (except phase/ADC), skull-stripped, float32
  on the output grid (reference grid cropped to the brain box + margin, optionally resampled);
* ``<subject>_brainmask.nii.gz`` (uint8) the brain: the skull-strip backend's mask minus its outer
  CSF/skull rim (``skullstrip.tighten``); N4 is fitted and harmonisation statistics are taken in it;
* ``<subject>_icvmask.nii.gz`` (uint8) the intracranial mask the images are stripped with: the
  backend's own mask (brain + subarachnoid CSF) united with the brain, grown by
  ``skullstrip.vessel_margin_mm`` inside its convex hull (the skull-base cisterns). Images keep their values there, so a thrombus in a cortical
  branch, in the intracranial ICA or basilar artery at the skull base, or a CSF-like chronic
  infarct at the surface is never zeroed even when the tight brain mask leaves it out;
* ``<subject>_<thrombus|lesion>.nii.gz`` (uint8) labels on the output grid;
* ``<subject>_preproc.json``   grid, reference, per-sequence registration (matrix, MI before/after),
  label volumes before/after, intensity percentiles, brain volume, ADC units, timings per step;
* ``<subject>_qc.png``         QC montage.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.fs import atomic_dir, check_id, check_output_dir
from ..sheet import LABEL_GRID as SHEET_LABEL_GRID
from ..core.io import write_json
from ..sheet import SEQUENCES
from . import skullstrip as ss
from ._io import (PreprocessingError, atomic_write_nifti, like, load_image, nifti_affine,
                  set_threads)
from .bias import N4_SKIP_DEFAULT, n4_correct
from .harmonize import NYUL_SKIP_DEFAULT, detect_adc_units
from .registration import (MAGNITUDE_OF_PHASE, SEQUENCE_PRIORITY, Registration, move_label, register,
                           resample)
import ants

#: Sequence each label is drawn on, in order of preference: the sheet contract's, keyed by label name.
LABEL_GRID: dict[str, tuple[str, ...]] = {k.removesuffix("_mask"): v for k, v in SHEET_LABEL_GRID.items()}
#: Sequences that share their leader's acquisition and therefore its transform (first present leader).
FOLLOWS: dict[str, tuple[str, ...]] = {"phase": MAGNITUDE_OF_PHASE, "adc": ("dwi",)}

DEFAULT_CONFIG: dict = {
    "reference": None,                       # force a reference sequence; None = first of priority
    "reference_priority": list(SEQUENCE_PRIORITY),
    "threads": 2,
    "deterministic": True,                   # ITK/ANTs single-threaded: bit-identical reruns
    "skullstrip": {
        "backend": ss.DEFAULT_BACKEND,       # deepbet | ants | hdbet
        "sequence": None,                    # sequence to strip; None = the reference
        "hdbet_weights": None,               # folder with HD-BET's model (see skullstrip.py)
        "hdbet_device": "cpu",
        "hdbet_tta": False,
        "ants_refine": True,
        "ants_template_resolution": 2,
        "tighten": True,                     # brain mask = backend mask minus its CSF/skull rim
        # The images also keep what lies within this margin of the intracranial mask and inside its
        # convex hull: the intracranial ICA and the basilar artery run at or under the stripped
        # brain's inferior edge (demo: 4 of 4 ICA/basilar thrombi 12-51 % outside the backend's
        # mask, all kept with 8 mm). 0 = the mask as it is.
        "vessel_margin_mm": 8.0,
    },
    "registration": {
        "transform": "rigid",                # rigid | affine
        "init": "auto",                      # auto | identity | com
        "reg_spacing_mm": 2.0,
        "brain_mask_dilation_mm": 10.0,      # fixed-image mask = dilated brain (null: no mask)
        "interpolation": "linear",           # for images; labels use the volume-preserving mover
        "seed": 42,
    },
    "grid": {"crop_margin_mm": 10.0, "spacing_mm": None},
    "n4": {"enabled": True, "skip": list(N4_SKIP_DEFAULT), "iterations": [20, 20, 10], "fit_spacing_mm": 4.0},
    "harmonize": {"nyul_skip": list(NYUL_SKIP_DEFAULT), "cutoff": [0.01, 0.99], "clip": 8.0},
    "qc": {"montage": True},
}


def _merge(base: dict, over: dict, path: str = "preprocess") -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k not in base:
            raise PreprocessingError(f"config: unknown option '{path}.{k}' (known: {', '.join(base)})")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise PreprocessingError(f"config: '{path}.{k}' must be a mapping")
            out[k] = _merge(base[k], v, f"{path}.{k}")
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config(config: dict | None = None) -> dict:
    """Defaults merged with ``config`` (the workflow config or just its ``preprocess`` section)."""
    config = config or {}
    if "preprocess" in config and isinstance(config["preprocess"], dict):
        config = config["preprocess"]
    cfg = _merge(DEFAULT_CONFIG, config)
    if cfg["skullstrip"]["backend"] not in ss.BACKENDS:
        raise PreprocessingError(f"config: preprocess.skullstrip.backend must be one of {ss.BACKENDS}, "
                                 f"got {cfg['skullstrip']['backend']!r}")
    if not isinstance(cfg["deterministic"], bool):
        raise PreprocessingError(f"config: preprocess.deterministic must be true or false, got {cfg['deterministic']!r}")
    if cfg["threads"] is not None and (isinstance(cfg["threads"], bool) or not isinstance(cfg["threads"], int)
                                       or cfg["threads"] < 1):
        raise PreprocessingError(f"config: preprocess.threads must be an integer >= 1, got {cfg['threads']!r}")
    margin = cfg["skullstrip"]["vessel_margin_mm"]
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        raise PreprocessingError(f"config: preprocess.skullstrip.vessel_margin_mm must be a number >= 0 (mm), "
                                 f"got {margin!r}")
    bad = [s for s in cfg["reference_priority"] if s not in SEQUENCES]
    if bad:
        raise PreprocessingError(f"config: preprocess.reference_priority has unknown sequences {bad}")
    return cfg


def _grow_into_hull(mask: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """``mask`` plus the voxels within ``margin_mm`` of it that lie inside its 3-D convex hull.

    The hull holds the concavities under the brain (between the temporal lobes, in front of the
    brainstem) where the intracranial ICA, the carotid siphon and the basilar artery run, but not
    the scalp and skull over the convexity, which a plain dilation would bring back.
    """
    if margin_mm <= 0 or not mask.any():
        return mask
    from scipy.spatial import ConvexHull, Delaunay, QhullError

    near = ndimage.distance_transform_edt(~mask, sampling=spacing) <= margin_mm
    cand = np.argwhere(near & ~mask)
    surface = np.argwhere(mask & ~ndimage.binary_erosion(mask))  # the hull of a mask is its surface's
    try:
        hull = Delaunay(surface[ConvexHull(surface).vertices])
    except QhullError:  # a flat or degenerate mask (one slice): nothing to fill
        return mask
    out = mask.copy()
    out[tuple(cand[hull.find_simplex(cand) >= 0].T)] = True
    return out


def choose_reference(available, priority=SEQUENCE_PRIORITY, forced: str | None = None) -> str:
    available = list(available)
    if forced:
        if forced not in available:
            raise PreprocessingError(f"configured reference sequence {forced!r} not available ({available})")
        return forced
    for s in priority:
        if s in available:
            return s
    return available[0]


def _subject_dir(root: Path, subject: str) -> Path:
    if (root / subject).is_dir():
        return root / subject
    if any(root.glob(f"{subject}_*.nii.gz")):
        return root
    raise PreprocessingError(f"{root / subject}: ingest folder of subject {subject!r} not found")


def _bbox(mask: np.ndarray, margin_vox: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin_vox, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin_vox, np.asarray(shape))
    return lo.astype(int), hi.astype(int)


def _grid(reference: ants.ANTsImage, lo, hi, spacing) -> ants.ANTsImage:
    d = np.asarray(reference.direction, float) @ np.diag(reference.spacing)
    origin = np.asarray(reference.origin, float) + d @ np.asarray(lo, float)
    g = ants.from_numpy(np.zeros(tuple(int(x) for x in np.asarray(hi) - np.asarray(lo)), np.float32),
                        origin=tuple(origin.tolist()), spacing=reference.spacing, direction=reference.direction)
    if spacing:
        sp = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(float(s) for s in spacing)
        g = ants.resample_image(g, sp, use_voxels=False, interp_type=1)
    return g


def _percentiles(a: np.ndarray, m: np.ndarray) -> dict:
    v = a[m]
    p = np.percentile(v, [1, 50, 99]) if v.size else [np.nan] * 3
    return {"p01": round(float(p[0]), 5), "p50": round(float(p[1]), 5), "p99": round(float(p[2]), 5)}


def preprocess_subject(ingest_dir: str | Path, subject: str, out_dir: str | Path,
                       config: dict | None = None, overwrite: bool = False) -> dict:
    """Preprocess one patient (see module doc); returns the ``<subject>_preproc.json`` dictionary.

    ``out_dir/<subject>`` must be new or empty, or (``overwrite``) a previous thrombseg output.

    Raises:
        PreprocessingError: missing/unreadable/non-3-D inputs, bad config, no brain found; the
        message names the file and the problem. HDBetWeightsMissing (a PreprocessingError) when the
        hdbet backend has no weights.
    """
    dest = check_output_dir(Path(out_dir) / check_id(subject), overwrite, inputs=[ingest_dir])  # before the work
    cfg = resolve_config(config)
    set_threads(cfg["threads"], cfg["deterministic"])
    t_all = time.perf_counter()
    timings: dict[str, float] = dict.fromkeys(("load", "skullstrip", "registration", "grid", "resample", "n4",
                                               "labels", "write", "qc"), 0.0)
    warnings: list[str] = []

    def tick(name, t0):
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 3)

    # ---- inputs -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    src = _subject_dir(Path(ingest_dir), subject)
    sidecar = {}
    if (src / f"{subject}_ingest.json").is_file():
        sidecar = json.loads((src / f"{subject}_ingest.json").read_text())
    seqs = [s for s in SEQUENCES if (src / f"{subject}_{s}.nii.gz").is_file()]
    if not seqs:
        raise PreprocessingError(f"{src}: no sequence found for {subject} (expected {subject}_<seq>.nii.gz "
                                 f"with seq in {', '.join(SEQUENCES)})")
    imgs = {s: load_image(src / f"{subject}_{s}.nii.gz", what=s) for s in seqs}
    labels_native = {}
    for name in LABEL_GRID:
        p = src / f"{subject}_{name}.nii.gz"
        if p.is_file():
            labels_native[name] = load_image(p, what=f"{name} label", allow_constant=True)
    tick("load", t0)

    reference = choose_reference(seqs, cfg["reference_priority"], cfg["reference"])
    magnitude = next((m for m in MAGNITUDE_OF_PHASE if m in seqs), None)
    ref = imgs[reference]
    rcfg = cfg["registration"]
    scfg = cfg["skullstrip"]
    regs: dict[str, Registration] = {reference: Registration.identity()}

    def reg(seq, mask=None):
        t = time.perf_counter()
        r = register(ref, imgs[seq], transform=rcfg["transform"], fixed_mask=mask,
                     reg_spacing=rcfg["reg_spacing_mm"], init=rcfg["init"], seed=rcfg["seed"])
        tick("registration", t)
        return r

    # ---- skull strip ----------------------------------------------------------------------------
    strip_seq = scfg["sequence"] if scfg["sequence"] in seqs else reference
    if scfg["sequence"] and scfg["sequence"] not in seqs:
        warnings.append(f"skull-strip sequence {scfg['sequence']} absent; stripped {reference}")
    if strip_seq == "phase" and magnitude:
        strip_seq = magnitude
    if strip_seq != reference:
        regs[strip_seq] = reg(strip_seq)
    t0 = time.perf_counter()
    icv_native, ss_info = ss.skull_strip(imgs[strip_seq], scfg["backend"], hdbet_weights=scfg["hdbet_weights"],
                                         device=scfg["hdbet_device"], tta=scfg["hdbet_tta"],
                                         ants_refine=scfg["ants_refine"], tighten=False,
                                         template_resolution=scfg["ants_template_resolution"],
                                         seed=rcfg["seed"], return_info=True)
    ss_info["sequence"] = strip_seq
    icv_arr = icv_native.numpy() > 0.5
    brain_arr = ss.tighten_mask(imgs[strip_seq], icv_arr) if scfg["tighten"] else icv_arr
    mask_native = like(icv_native, brain_arr.astype(np.float32))
    icv_native = like(icv_native, (icv_arr | brain_arr).astype(np.float32))
    if strip_seq == reference:
        mask_ref, icv_ref = mask_native, icv_native
    else:
        mask_ref = ants.threshold_image(resample(mask_native, ref, regs[strip_seq].matrix), 0.5, 1e9)
        icv_ref = ants.threshold_image(resample(icv_native, ref, regs[strip_seq].matrix), 0.5, 1e9)
    tick("skullstrip", t0)

    # ---- co-registration ------------------------------------------------------------------------
    reg_mask = None
    if rcfg["brain_mask_dilation_mm"] is not None:
        rad = max(1, int(round(float(rcfg["brain_mask_dilation_mm"]) / float(np.mean(ref.spacing)))))
        reg_mask = ants.morphology(icv_ref, "dilate", rad, mtype="binary")
    # phase and ADC come from the same acquisition as their magnitude / DWI: they take its transform
    leader = {s: next((m for m in FOLLOWS[s] if m in seqs), None) for s in FOLLOWS if s in seqs}
    if "phase" in leader and leader["phase"] is None:
        warnings.append("phase without a magnitude image: registered on its own (unreliable)")
    for s in seqs:
        if s in regs or leader.get(s):
            continue
        regs[s] = reg(s, reg_mask)
    for s, m in leader.items():
        if s not in regs and m:
            regs[s] = copy.deepcopy(regs[m])
            regs[s].init = f"follows {m}"

    # ---- output grid ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    union = icv_ref.numpy() > 0.5
    label_src = {}
    for name, lab in labels_native.items():
        drawn = (sidecar.get("labels", {}).get(name, {}) or {}).get("drawn_on")
        if drawn not in seqs:
            drawn = next((s for s in LABEL_GRID[name] if s in seqs), reference)
        label_src[name] = drawn
        if lab.numpy().any():  # make sure the crop never cuts a label
            union |= resample(lab, ref, regs[drawn].matrix, "linear").numpy() > 1e-3
    margin = np.ceil(float(cfg["grid"]["crop_margin_mm"]) / np.asarray(ref.spacing)).astype(int)
    lo, hi = _bbox(union, margin, ref.shape)
    grid = _grid(ref, lo, hi, cfg["grid"]["spacing_mm"])
    brain = resample(mask_ref, grid, None, "linear").numpy() >= 0.5
    icv = (resample(icv_ref, grid, None, "linear").numpy() >= 0.5) | brain
    icv_volume_ml = float(icv.sum() * np.prod(grid.spacing) / 1000.0)  # QC: before the vessel margin
    icv = _grow_into_hull(icv, tuple(grid.spacing), float(scfg["vessel_margin_mm"]))
    brain_img = like(grid, brain.astype(np.float32))
    icv_img = like(grid, icv.astype(np.float32))
    tick("grid", t0)

    # ---- resample, units, N4, mask ----------------------------------------------------------------
    out_imgs: dict[str, ants.ANTsImage] = {}
    adc_info = None
    for s in seqs:
        t0 = time.perf_counter()
        img = resample(imgs[s], grid, regs[s].matrix, rcfg["interpolation"])
        if s == "adc":
            factor, unit = detect_adc_units(img.numpy()[brain], source=str(src / f"{subject}_adc.nii.gz"))
            adc_info = {"detected": unit, "factor_to_1e-3_mm2_s": factor}
            if factor != 1.0:
                img = like(img, img.numpy() * factor)
        tick("resample", t0)
        t0 = time.perf_counter()
        if cfg["n4"]["enabled"] and s not in cfg["n4"]["skip"]:
            img = n4_correct(img, brain_img, iterations=tuple(cfg["n4"]["iterations"]),
                             fit_spacing_mm=float(cfg["n4"]["fit_spacing_mm"]), apply_mask=icv_img)
        tick("n4", t0)
        out_imgs[s] = like(img, np.where(icv, img.numpy(), 0.0))

    # ---- labels ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    out_labels: dict[str, ants.ANTsImage] = {}
    label_info: dict[str, dict] = {}
    for name, lab in labels_native.items():
        moved, info = move_label(lab, grid, regs[label_src[name]].matrix, return_info=True)
        m = moved.numpy() > 0.5
        info["drawn_on"] = label_src[name]
        info["fraction_in_brain"] = round(float((m & brain).sum() / m.sum()), 4) if m.any() else None
        info["fraction_in_icv"] = round(float((m & icv).sum() / m.sum()), 4) if m.any() else None
        if info["lost"]:
            warnings.append(f"{name} label lost when moved to the reference grid")
        elif info["volume_ratio"] is not None and not 0.9 <= info["volume_ratio"] <= 1.1:
            warnings.append(f"{name} label volume ratio {info['volume_ratio']} after moving")
        if info["fraction_in_icv"] is not None and info["fraction_in_icv"] < 0.99:
            warnings.append(f"{name} label: {100 * (1 - info['fraction_in_icv']):.1f}% outside the "
                            "intracranial mask (zeroed in the images)")
        out_labels[name] = moved
        label_info[name] = info
    tick("labels", t0)

    # ---- write (hidden temp folder, renamed at the end) --------------------------------------------
    t0 = time.perf_counter()
    vox_ml = float(np.prod(grid.spacing)) / 1000.0
    meta = {
        "subject": subject, "center": sidecar.get("center", ""), "split": sidecar.get("split", ""),
        "reference": reference, "sequences": seqs,
        "grid": {"shape": list(grid.shape), "spacing_mm": [round(float(x), 6) for x in grid.spacing],
                 "affine_ras": np.round(nifti_affine(grid), 6).tolist(),
                 "crop_index_lo": lo.tolist(), "crop_index_hi": hi.tolist(),
                 "reference_shape": list(ref.shape), "crop_margin_mm": cfg["grid"]["crop_margin_mm"]},
        "skullstrip": ss_info, "brain_volume_ml": round(float(brain.sum() * vox_ml), 3),
        "icv_volume_ml": round(icv_volume_ml, 3),
        "registration": {s: regs[s].to_dict() for s in seqs if s != reference},
        "labels": label_info,
        "intensity": {s: _percentiles(out_imgs[s].numpy(), brain) for s in seqs},
        "adc_units": adc_info, "n4": {s: bool(cfg["n4"]["enabled"] and s not in cfg["n4"]["skip"]) for s in seqs},
        "warnings": list(sidecar.get("warnings", [])) + warnings,
        "config": cfg,
    }
    with atomic_dir(dest, overwrite, inputs=[ingest_dir], command="preprocess") as tmp:
        for s, img in out_imgs.items():
            atomic_write_nifti(img, tmp / f"{subject}_{s}.nii.gz")
        atomic_write_nifti(brain_img, tmp / f"{subject}_brainmask.nii.gz", dtype=np.uint8)
        atomic_write_nifti(icv_img, tmp / f"{subject}_icvmask.nii.gz", dtype=np.uint8)
        for name, lab in out_labels.items():
            atomic_write_nifti(lab, tmp / f"{subject}_{name}.nii.gz", dtype=np.uint8)
        tick("write", t0)
        if cfg["qc"]["montage"]:
            from .qc import qc_montage

            t0 = time.perf_counter()
            qc_montage(out_imgs, brain_img, out_labels, tmp / f"{subject}_qc.png",
                       title=f"{subject} ({meta['center']}) ref={reference} strip={scfg['backend']}", icv=icv_img)
            tick("qc", t0)
        timings["total"] = round(time.perf_counter() - t_all, 3)
        meta["timings_s"] = timings
        write_json(meta, tmp / f"{subject}_preproc.json")
    return meta
