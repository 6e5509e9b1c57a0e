"""One patient through preprocessing: skull strip -> co-register -> crop -> N4 -> labels -> QC.

``preprocess_subject(ingest_dir, subject, out_dir, config)`` reads the ingest stage's canonical
NIfTIs ``<ingest_dir>/<subject>/<subject>_<seq>.nii.gz`` (+ ``_thrombus``/``_infarct`` labels and the
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
* ``<subject>_<thrombus|infarct>.nii.gz`` (uint8) labels on the output grid;
* ``<subject>_preproc.json``   grid, reference, per-sequence registration (matrix, MI before/after),
  label volumes before/after, intensity percentiles, brain volume, ADC units, timings per step;
* ``<subject>_qc.png``         QC montage.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import ants
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, Delaunay, QhullError

from ..core.fs import atomic_dir, check_id, check_output_dir
from ..core.io import write_json
from ..core.sequences import LABEL_GRID as SHEET_LABEL_GRID
from ..core.sequences import SEQUENCES, old_names
from ..core.timing import StepTimer
from . import skullstrip as ss
from ._io import PreprocessingError, atomic_write_nifti, label_file, like, load_image, nifti_affine, set_threads
from .bias import n4_correct
from .qc import qc_montage
from .registration import Registration, move_label, register, resample
from .settings import MAGNITUDE_OF_PHASE, SEQUENCE_PRIORITY, resolve_config
from .units import detect_adc_units

#: Sequence each label is drawn on, in order of preference: the sheet contract's, keyed by label name.
LABEL_GRID: dict[str, tuple[str, ...]] = {k.removesuffix("_mask"): v for k, v in SHEET_LABEL_GRID.items()}
#: Sequences that share their leader's acquisition and therefore its transform (first present leader).
FOLLOWS: dict[str, tuple[str, ...]] = {"phase": MAGNITUDE_OF_PHASE, "adc": ("dwi",)}
STEPS: tuple[str, ...] = ("load", "skullstrip", "registration", "grid", "resample", "n4", "labels", "write", "qc")


@dataclass
class _Inputs:
    """The ingest stage's files of one patient, read."""

    src: Path
    sidecar: dict
    seqs: list[str]
    images: dict[str, ants.ANTsImage]
    labels: dict[str, ants.ANTsImage]  # label name -> label on the grid it was drawn on


@dataclass
class _Masks:
    """Brain and intracranial masks, on the reference grid and then on the output grid."""

    brain_ref: ants.ANTsImage
    icv_ref: ants.ANTsImage
    strip_info: dict
    brain: np.ndarray | None = None
    icv: np.ndarray | None = None
    icv_volume_ml: float = 0.0  # before the vessel margin


@dataclass
class _Grid:
    """The output grid: the reference cropped to the brain box (+ margin), optionally resampled."""

    image: ants.ANTsImage
    lo: np.ndarray
    hi: np.ndarray
    label_src: dict[str, str] = field(default_factory=dict)  # label -> sequence it was drawn on


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
    clock, warnings = StepTimer(STEPS), []
    with clock.step("load"):
        inputs = _load_inputs(Path(ingest_dir), subject)
    reference = choose_reference(inputs.seqs, cfg["reference_priority"], cfg["reference"])
    regs: dict[str, Registration] = {reference: Registration.identity()}
    masks = _strip_skull(inputs, reference, regs, cfg, clock, warnings)
    _coregister(inputs, reference, regs, masks, cfg, clock, warnings)
    with clock.step("grid"):
        grid = _output_grid(inputs, reference, regs, masks, cfg)
    images, adc_info = _resample_sequences(inputs, subject, regs, grid, masks, cfg, clock)
    with clock.step("labels"):
        labels, label_info = _move_labels(inputs, regs, grid, masks, warnings)
    meta = _metadata(subject, inputs, reference, regs, grid, masks, images, label_info, adc_info, cfg, warnings)
    with atomic_dir(dest, overwrite, inputs=[ingest_dir], command="preprocess") as tmp:
        with clock.step("write"):
            _write_volumes(tmp, subject, images, labels, grid, masks)
        if cfg["qc"]["montage"]:
            with clock.step("qc"):
                qc_montage(images, like(grid.image, masks.brain.astype(np.float32)), labels, tmp / f"{subject}_qc.png",
                           title=f"{subject} ({meta['center']}) ref={reference} strip={cfg['skullstrip']['backend']}",
                           icv=like(grid.image, masks.icv.astype(np.float32)))
        meta["timings_s"] = clock.total()
        write_json(meta, tmp / f"{subject}_preproc.json")
    return meta


def choose_reference(available, priority=SEQUENCE_PRIORITY, forced: str | None = None) -> str:
    """The sequence whose grid every other is registered to: ``forced``, else the first of ``priority``."""
    available = list(available)
    if forced:
        if forced not in available:
            raise PreprocessingError(f"configured reference sequence {forced!r} not available ({available})")
        return forced
    for s in priority:
        if s in available:
            return s
    return available[0]


# --------------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------------
def _subject_dir(root: Path, subject: str) -> Path:
    """The ingest folder of ``subject``: ``root/<subject>``, or ``root`` itself when it holds the files."""
    if (root / subject).is_dir():
        return root / subject
    if any(root.glob(f"{subject}_*.nii.gz")):
        return root
    raise PreprocessingError(f"{root / subject}: ingest folder of subject {subject!r} not found")


def _load_inputs(ingest_dir: Path, subject: str) -> _Inputs:
    """Read the patient's sequences, labels and ingest sidecar (PreprocessingError when none is usable)."""
    src = _subject_dir(ingest_dir, subject)
    sidecar_path = src / f"{subject}_ingest.json"
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
    seqs = [s for s in SEQUENCES if (src / f"{subject}_{s}.nii.gz").is_file()]
    if not seqs:
        raise PreprocessingError(f"{src}: no sequence found for {subject} (expected {subject}_<seq>.nii.gz "
                                 f"with seq in {', '.join(SEQUENCES)})")
    images = {s: load_image(src / f"{subject}_{s}.nii.gz", what=s) for s in seqs}
    files = {name: label_file(src, subject, name) for name in LABEL_GRID}
    labels = {name: load_image(p, what=f"{name} label", allow_constant=True) for name, p in files.items() if p}
    return _Inputs(src, sidecar, seqs, images, labels)


# --------------------------------------------------------------------------------------------------
# skull strip and co-registration
# --------------------------------------------------------------------------------------------------
def _register(inputs: _Inputs, reference: str, seq: str, cfg: dict, clock: StepTimer, mask=None) -> Registration:
    """``seq`` registered to the reference sequence with the configured settings."""
    rcfg = cfg["registration"]
    with clock.step("registration"):
        return register(inputs.images[reference], inputs.images[seq], transform=rcfg["transform"], fixed_mask=mask,
                        reg_spacing=rcfg["reg_spacing_mm"], init=rcfg["init"], seed=rcfg["seed"])


def _strip_sequence(seqs: list[str], reference: str, wanted: str | None, warnings: list[str]) -> str:
    """The sequence to skull-strip: the configured one when present (a phase: its magnitude), else the reference."""
    strip_seq = wanted if wanted in seqs else reference
    if wanted and wanted not in seqs:
        warnings.append(f"skull-strip sequence {wanted} absent; stripped {reference}")
    magnitude = next((m for m in MAGNITUDE_OF_PHASE if m in seqs), None)
    if strip_seq == "phase" and magnitude:
        strip_seq = magnitude
    return strip_seq


def _strip_skull(inputs: _Inputs, reference: str, regs: dict, cfg: dict, clock: StepTimer,
                 warnings: list[str]) -> _Masks:
    """Brain and intracranial masks on the reference grid, from the configured strip sequence."""
    scfg = cfg["skullstrip"]
    strip_seq = _strip_sequence(inputs.seqs, reference, scfg["sequence"], warnings)
    if strip_seq != reference:
        regs[strip_seq] = _register(inputs, reference, strip_seq, cfg, clock)
    with clock.step("skullstrip"):
        img = inputs.images[strip_seq]
        icv_native, info = ss.skull_strip(img, scfg["backend"], hdbet_weights=scfg["hdbet_weights"],
                                          device=scfg["hdbet_device"], tta=scfg["hdbet_tta"],
                                          ants_refine=scfg["ants_refine"], tighten=False,
                                          template_resolution=scfg["ants_template_resolution"],
                                          seed=cfg["registration"]["seed"], return_info=True)
        info["sequence"] = strip_seq
        icv_arr = icv_native.numpy() > 0.5
        brain_arr = ss.tighten_mask(img, icv_arr) if scfg["tighten"] else icv_arr
        brain_native = like(icv_native, brain_arr.astype(np.float32))
        icv_native = like(icv_native, (icv_arr | brain_arr).astype(np.float32))
        if strip_seq == reference:
            return _Masks(brain_native, icv_native, info)
        ref, matrix = inputs.images[reference], regs[strip_seq].matrix
        return _Masks(ants.threshold_image(resample(brain_native, ref, matrix), 0.5, 1e9),
                      ants.threshold_image(resample(icv_native, ref, matrix), 0.5, 1e9), info)


def _coregister(inputs: _Inputs, reference: str, regs: dict, masks: _Masks, cfg: dict, clock: StepTimer,
                warnings: list[str]) -> None:
    """Register every sequence to the reference (in ``regs``); phase and ADC take their leader's transform."""
    ref = inputs.images[reference]
    dilation_mm = cfg["registration"]["brain_mask_dilation_mm"]
    reg_mask = None
    if dilation_mm is not None:
        radius = max(1, int(round(float(dilation_mm) / float(np.mean(ref.spacing)))))
        reg_mask = ants.morphology(masks.icv_ref, "dilate", radius, mtype="binary")
    # phase and ADC come from the same acquisition as their magnitude / DWI: they take its transform
    leader = {s: next((m for m in FOLLOWS[s] if m in inputs.seqs), None) for s in FOLLOWS if s in inputs.seqs}
    if "phase" in leader and leader["phase"] is None:
        warnings.append("phase without a magnitude image: registered on its own (unreliable)")
    for s in inputs.seqs:
        if s not in regs and not leader.get(s):
            regs[s] = _register(inputs, reference, s, cfg, clock, reg_mask)
    for s, m in leader.items():
        if s not in regs and m:
            regs[s] = copy.deepcopy(regs[m])
            regs[s].init = f"follows {m}"


# --------------------------------------------------------------------------------------------------
# output grid
# --------------------------------------------------------------------------------------------------
def _grow_into_hull(mask: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """``mask`` plus the voxels within ``margin_mm`` of it that lie inside its 3-D convex hull.

    The hull holds the concavities under the brain (between the temporal lobes, in front of the
    brainstem) where the intracranial ICA, the carotid siphon and the basilar artery run, but not
    the scalp and skull over the convexity, which a plain dilation would bring back.
    """
    if margin_mm <= 0 or not mask.any():
        return mask
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


def _bbox(mask: np.ndarray, margin_vox: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Index box (lo, hi) of ``mask`` grown by ``margin_vox``, clipped to ``shape``."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin_vox, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin_vox, np.asarray(shape))
    return lo.astype(int), hi.astype(int)


def _crop_grid(reference: ants.ANTsImage, lo, hi, spacing) -> ants.ANTsImage:
    """The index box ``lo:hi`` of ``reference`` as an empty image, resampled to ``spacing`` mm when given."""
    d = np.asarray(reference.direction, float) @ np.diag(reference.spacing)
    origin = np.asarray(reference.origin, float) + d @ np.asarray(lo, float)
    g = ants.from_numpy(np.zeros(tuple(int(x) for x in np.asarray(hi) - np.asarray(lo)), np.float32),
                        origin=tuple(origin.tolist()), spacing=reference.spacing, direction=reference.direction)
    if spacing:
        sp = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(float(s) for s in spacing)
        g = ants.resample_image(g, sp, use_voxels=False, interp_type=1)
    return g


def _label_sources(inputs: _Inputs, reference: str) -> dict[str, str]:
    """The sequence each label was drawn on: the ingest sidecar's, else the first present of LABEL_GRID."""
    out = {}
    for name in inputs.labels:
        side = inputs.sidecar.get("labels", {})
        entry = next((side[n] for n in (name, *old_names(name)) if n in side), None)
        drawn = (entry or {}).get("drawn_on")
        if drawn not in inputs.seqs:
            drawn = next((s for s in LABEL_GRID[name] if s in inputs.seqs), reference)
        out[name] = drawn
    return out


def _output_grid(inputs: _Inputs, reference: str, regs: dict, masks: _Masks, cfg: dict) -> _Grid:
    """Crop the reference to the intracranial mask and every label (+ margin); masks onto that grid."""
    ref = inputs.images[reference]
    union = masks.icv_ref.numpy() > 0.5
    label_src = _label_sources(inputs, reference)
    for name, lab in inputs.labels.items():
        if lab.numpy().any():  # make sure the crop never cuts a label
            union |= resample(lab, ref, regs[label_src[name]].matrix, "linear").numpy() > 1e-3
    margin = np.ceil(float(cfg["grid"]["crop_margin_mm"]) / np.asarray(ref.spacing)).astype(int)
    lo, hi = _bbox(union, margin, ref.shape)
    grid = _crop_grid(ref, lo, hi, cfg["grid"]["spacing_mm"])
    masks.brain = resample(masks.brain_ref, grid, None, "linear").numpy() >= 0.5
    icv = (resample(masks.icv_ref, grid, None, "linear").numpy() >= 0.5) | masks.brain
    masks.icv_volume_ml = float(icv.sum() * np.prod(grid.spacing) / 1000.0)
    masks.icv = _grow_into_hull(icv, tuple(grid.spacing), float(cfg["skullstrip"]["vessel_margin_mm"]))
    return _Grid(grid, lo, hi, label_src)


# --------------------------------------------------------------------------------------------------
# resample, ADC units, N4; labels
# --------------------------------------------------------------------------------------------------
def _n4_applies(seq: str, cfg: dict) -> bool:
    return bool(cfg["n4"]["enabled"] and seq not in cfg["n4"]["skip"])


def _resample_sequences(inputs: _Inputs, subject: str, regs: dict, grid: _Grid, masks: _Masks, cfg: dict,
                        clock: StepTimer) -> tuple[dict[str, ants.ANTsImage], dict | None]:
    """Every sequence on the output grid: ADC in 1e-3 mm^2/s, N4-corrected, zero outside the intracranial mask."""
    brain_img = like(grid.image, masks.brain.astype(np.float32))
    icv_img = like(grid.image, masks.icv.astype(np.float32))
    out: dict[str, ants.ANTsImage] = {}
    adc_info = None
    for s in inputs.seqs:
        with clock.step("resample"):
            img = resample(inputs.images[s], grid.image, regs[s].matrix, cfg["registration"]["interpolation"])
            if s == "adc":
                factor, unit = detect_adc_units(img.numpy()[masks.brain], source=str(inputs.src / f"{subject}_adc.nii.gz"))
                adc_info = {"detected": unit, "factor_to_1e-3_mm2_s": factor}
                if factor != 1.0:
                    img = like(img, img.numpy() * factor)
        with clock.step("n4"):
            if _n4_applies(s, cfg):
                img = n4_correct(img, brain_img, iterations=tuple(cfg["n4"]["iterations"]),
                                 fit_spacing_mm=float(cfg["n4"]["fit_spacing_mm"]), apply_mask=icv_img)
        out[s] = like(img, np.where(masks.icv, img.numpy(), 0.0))
    return out, adc_info


def _move_labels(inputs: _Inputs, regs: dict, grid: _Grid, masks: _Masks,
                 warnings: list[str]) -> tuple[dict[str, ants.ANTsImage], dict[str, dict]]:
    """Every label moved onto the output grid, with its volume check and the share inside each mask."""
    moved_labels, label_info = {}, {}
    for name, lab in inputs.labels.items():
        moved, info = move_label(lab, grid.image, regs[grid.label_src[name]].matrix, return_info=True)
        m = moved.numpy() > 0.5
        info["drawn_on"] = grid.label_src[name]
        info["fraction_in_brain"] = round(float((m & masks.brain).sum() / m.sum()), 4) if m.any() else None
        info["fraction_in_icv"] = round(float((m & masks.icv).sum() / m.sum()), 4) if m.any() else None
        warnings.extend(_label_warnings(name, info))
        moved_labels[name] = moved
        label_info[name] = info
    return moved_labels, label_info


def _label_warnings(name: str, info: dict) -> list[str]:
    """What a moved label's volume and position say about it (lost, resized, outside the mask)."""
    out = []
    if info["lost"]:
        out.append(f"{name} label lost when moved to the reference grid")
    elif info["volume_ratio"] is not None and not 0.9 <= info["volume_ratio"] <= 1.1:
        out.append(f"{name} label volume ratio {info['volume_ratio']} after moving")
    if info["fraction_in_icv"] is not None and info["fraction_in_icv"] < 0.99:
        out.append(f"{name} label: {100 * (1 - info['fraction_in_icv']):.1f}% outside the "
                   "intracranial mask (zeroed in the images)")
    return out


# --------------------------------------------------------------------------------------------------
# write
# --------------------------------------------------------------------------------------------------
def _percentiles(a: np.ndarray, m: np.ndarray) -> dict:
    """1st, 50th and 99th percentile of ``a`` inside ``m``."""
    v = a[m]
    p = np.percentile(v, [1, 50, 99]) if v.size else [np.nan] * 3
    return {"p01": round(float(p[0]), 5), "p50": round(float(p[1]), 5), "p99": round(float(p[2]), 5)}


def _metadata(subject: str, inputs: _Inputs, reference: str, regs: dict, grid: _Grid, masks: _Masks,
              images: dict, label_info: dict, adc_info: dict | None, cfg: dict, warnings: list[str]) -> dict:
    """The ``<subject>_preproc.json`` dictionary (timings are added once written)."""
    g, seqs = grid.image, inputs.seqs
    vox_ml = float(np.prod(g.spacing)) / 1000.0
    return {
        "subject": subject, "center": inputs.sidecar.get("center", ""), "split": inputs.sidecar.get("split", ""),
        "reference": reference, "sequences": seqs,
        "grid": {"shape": list(g.shape), "spacing_mm": [round(float(x), 6) for x in g.spacing],
                 "affine_ras": np.round(nifti_affine(g), 6).tolist(),
                 "crop_index_lo": grid.lo.tolist(), "crop_index_hi": grid.hi.tolist(),
                 "reference_shape": list(inputs.images[reference].shape),
                 "crop_margin_mm": cfg["grid"]["crop_margin_mm"]},
        "skullstrip": masks.strip_info, "brain_volume_ml": round(float(masks.brain.sum() * vox_ml), 3),
        "icv_volume_ml": round(masks.icv_volume_ml, 3),
        "registration": {s: regs[s].to_dict() for s in seqs if s != reference},
        "labels": label_info,
        "intensity": {s: _percentiles(images[s].numpy(), masks.brain) for s in seqs},
        "adc_units": adc_info, "n4": {s: _n4_applies(s, cfg) for s in seqs},
        "warnings": list(inputs.sidecar.get("warnings", [])) + warnings,
        "config": cfg,
    }


def _write_volumes(folder: Path, subject: str, images: dict, labels: dict, grid: _Grid, masks: _Masks) -> None:
    """The sequences (float32), brain and intracranial masks and labels (uint8) as NIfTIs in ``folder``."""
    for s, img in images.items():
        atomic_write_nifti(img, folder / f"{subject}_{s}.nii.gz")
    atomic_write_nifti(like(grid.image, masks.brain.astype(np.float32)), folder / f"{subject}_brainmask.nii.gz",
                       dtype=np.uint8)
    atomic_write_nifti(like(grid.image, masks.icv.astype(np.float32)), folder / f"{subject}_icvmask.nii.gz",
                       dtype=np.uint8)
    for name, lab in labels.items():
        atomic_write_nifti(lab, folder / f"{subject}_{name}.nii.gz", dtype=np.uint8)
