"""Per-patient segmentation metrics for tiny lesions (thrombus) and infarcts.

All functions take binary 3-D masks (bool, or numeric holding only 0/1) on the
same grid plus the voxel spacing in mm (one value per axis, in array order).
Components use 26-connectivity unless told otherwise (as the ISLES'22
evaluation).

Definitions
    dice: 2|P∩T| / (|P| + |T|).
    detected: 1.0 if P and T share ≥ 1 voxel, else 0.0.
    detected_min_overlap: 1.0 if they share ≥ ``min_overlap_voxels`` voxels.
    n_fp_components / fp_volume_mm3: predicted components touching no truth voxel.
    n_fn_components / fn_volume_mm3: truth components touching no predicted voxel.
    lesion_tp / lesion_f1: ISLES'22 lesion-wise F1; a truth component is TP if it
        overlaps the prediction, FP/FN are the two counts above, and
        F1 = TP / (TP + (FP + FN) / 2).
    hd95_mm: medpy's ``hd95``: surface = mask minus its erosion by the
        6-neighbourhood cross (voxels on the image border count as surface);
        the 95th percentile (linear interpolation) of the pooled directed
        distances pred→truth and truth→pred, in mm with anisotropic spacing.
    volume_error_mm3: vol(P) − vol(T); abs_volume_error_mm3: its absolute value.
    truth_present / pred_present: the patient-level outcome (T, P non-empty); a
        thrombus-negative patient (empty T) is a valid label, and an empty P is the
        answer "no thrombus".
    presence_prob: the predicted probability that the patient has a thrombus, when
        the prediction gives one (``evaluate_case``); NaN otherwise.

Empty-case rules (each is tested)
    * truth empty (a thrombus-negative patient), whatever the prediction: dice,
      lesion_f1, hd95_mm NaN (hd95_penalized False), detected and
      detected_min_overlap NaN: these segmentation and detection metrics are
      averaged over thrombus-positive patients only (a mean never mixes in a
      negative's "1 for predicting nothing, 0 otherwise"). A negative is scored
      by the patient-level outcome (pred_present) and its false positives: every
      predicted component is one (counted, with its volume).
    * truth non-empty, prediction empty: dice 0, detected 0, lesion_f1 0,
      hd95 = the penalty (image diagonal in mm, ``sqrt(sum((shape*spacing)**2))``,
      larger than any distance inside the image) and ``hd95_penalized`` True,
      so a missed lesion raises the mean instead of being dropped as NaN.
    * The functions ``dice``, ``hd95`` and ``lesion_f1`` keep their own rules for
      empty masks (both empty: 1, 0, 1, as ISLES'22's ``empty_value``);
      ``infarct_dice`` is ``dice`` (1 when both infarct masks are empty).
    * truth_present, pred_present are never NaN (patient-level sensitivity and
      specificity are aggregated from them, see ``aggregate``).
    * infarct_dice is NaN when no infarct pair is given (column kept so every
      row of a table has the same columns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage

__all__ = [
    "as_binary",
    "check_spacing",
    "dice",
    "hd95",
    "hd95_penalty",
    "label_components",
    "component_errors",
    "lesion_f1",
    "thrombus_metrics",
    "evaluate_case",
    "check_presence_prob",
]

_CONNECTIVITIES = (6, 18, 26)
NO_PRESENCE_PROB = math.nan  # presence_prob of a prediction that gives no probability


def as_binary(mask, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a 3-D bool array.

    Raises:
        ValueError: if not 3-D or holding values other than 0/1 (e.g. a
            probability map passed by mistake).
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be 3-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be bool or numeric, got dtype {arr.dtype}")
    if not ((arr == 0) | (arr == 1)).all():
        raise ValueError(f"{name} must be binary (only 0 and 1); threshold it first")
    return arr == 1


def check_spacing(spacing, ndim: int = 3) -> np.ndarray:
    """Return spacing as a float array of length ``ndim``, all finite and > 0."""
    sp = np.asarray(spacing, dtype=float).reshape(-1)
    if sp.size != ndim:
        raise ValueError(f"spacing must have {ndim} values, got {sp.size}: {spacing!r}")
    if not (np.isfinite(sp).all() and (sp > 0).all()):
        raise ValueError(f"spacing must be finite and positive, got {spacing!r}")
    return sp


def _pair(pred, truth, names=("pred", "truth")) -> tuple[np.ndarray, np.ndarray]:
    p = as_binary(pred, names[0])
    t = as_binary(truth, names[1])
    if p.shape != t.shape:
        raise ValueError(
            f"shape mismatch: {names[0]} {p.shape} vs {names[1]} {t.shape}"
        )
    return p, t


def _check_connectivity(connectivity: int) -> None:
    if connectivity not in _CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {_CONNECTIVITIES}, got {connectivity}")


def dice(pred, truth, empty_value: float = 1.0) -> float:
    """Dice coefficient; ``empty_value`` when both masks are empty."""
    p, t = _pair(pred, truth)
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if denom == 0:
        return float(empty_value)
    return 2.0 * int(np.count_nonzero(p & t)) / denom


def hd95_penalty(shape: Sequence[int], spacing) -> float:
    """HD95 given when exactly one mask is empty: the image diagonal in mm."""
    sp = check_spacing(spacing, len(shape))
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=float) * sp) ** 2)))


def _surface(mask: np.ndarray) -> np.ndarray:
    # border_value=0: voxels on the image edge are surface, as in medpy.
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def hd95(pred, truth, spacing) -> tuple[float, bool]:
    """Symmetric 95th percentile surface distance in mm (medpy definition).

    Returns:
        ``(value, penalized)``: 0 when both are empty; the diagonal penalty and
        True when exactly one is empty; otherwise the distance and False.
    """
    p, t = _pair(pred, truth)
    sp = check_spacing(spacing, p.ndim)
    p_any, t_any = p.any(), t.any()
    if not p_any and not t_any:
        return 0.0, False
    if not (p_any and t_any):
        return hd95_penalty(p.shape, sp), True
    # Crop to the union's bounding box plus a one-voxel margin: much cheaper
    # and exact, since all surface voxels lie inside and a crop edge is either
    # the image edge or a layer of background, so erosion sees the same thing.
    union = p | t
    lo, hi = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(union.any(axis=other))
        lo.append(max(int(idx[0]) - 1, 0))
        hi.append(min(int(idx[-1]) + 2, union.shape[ax]))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sp_, st_ = _surface(p[box]), _surface(t[box])
    dt_to_t = ndimage.distance_transform_edt(~st_, sampling=sp)
    dt_to_p = ndimage.distance_transform_edt(~sp_, sampling=sp)
    d = np.concatenate([dt_to_t[sp_], dt_to_p[st_]])
    return float(np.percentile(d, 95)), False


def label_components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """(label image, number of components) of a binary mask."""
    labels, n = cc3d.connected_components(
        mask.astype(np.uint8, copy=False), connectivity=connectivity, return_N=True
    )
    return labels, int(n)


def component_errors(pred, truth, connectivity: int = 26) -> dict:
    """Component-level TP/FP/FN counts and voxel counts.

    Returns:
        Dict with n_pred_components, n_true_components, lesion_tp (truth
        components overlapping pred), n_fn_components, fn_voxels,
        n_fp_components, fp_voxels.
    """
    p, t = _pair(pred, truth)
    _check_connectivity(connectivity)
    lp, n_p = label_components(p, connectivity)
    lt, n_t = label_components(t, connectivity)
    hit_t = np.unique(lt[p & t])
    hit_p = np.unique(lp[p & t])
    size_t = np.bincount(lt.ravel(), minlength=n_t + 1)
    size_p = np.bincount(lp.ravel(), minlength=n_p + 1)
    missed_t = np.setdiff1d(np.arange(1, n_t + 1), hit_t)
    false_p = np.setdiff1d(np.arange(1, n_p + 1), hit_p)
    return {
        "n_pred_components": n_p,
        "n_true_components": n_t,
        "lesion_tp": int(hit_t.size),
        "n_fn_components": int(missed_t.size),
        "fn_voxels": int(size_t[missed_t].sum()),
        "n_fp_components": int(false_p.size),
        "fp_voxels": int(size_p[false_p].sum()),
    }


def lesion_f1(pred, truth, connectivity: int = 26, empty_value: float = 1.0) -> float:
    """ISLES'22 lesion-wise F1; ``empty_value`` when both masks are empty."""
    c = component_errors(pred, truth, connectivity)
    return _f1(c["lesion_tp"], c["n_fp_components"], c["n_fn_components"], empty_value)


def _f1(tp: int, fp: int, fn: int, empty_value: float) -> float:
    if tp + fp + fn == 0:
        return float(empty_value)
    return tp / (tp + (fp + fn) / 2.0)


def thrombus_metrics(
    pred,
    truth,
    spacing,
    *,
    min_overlap_voxels: int = 1,
    connectivity: int = 26,
) -> dict:
    """All per-patient metrics of one predicted/true mask pair.

    Args:
        pred: predicted binary mask (3-D).
        truth: reference binary mask, same shape.
        spacing: voxel size in mm per axis.
        min_overlap_voxels: overlap needed for ``detected_min_overlap``.
        connectivity: 6, 18 or 26 for component analysis.

    Returns:
        Flat dict (see module docstring for definitions and empty-case rules).
    """
    p, t = _pair(pred, truth)
    sp = check_spacing(spacing)
    if int(min_overlap_voxels) < 1:
        raise ValueError(f"min_overlap_voxels must be >= 1, got {min_overlap_voxels}")
    voxel_mm3 = float(np.prod(sp))
    n_p, n_t = int(np.count_nonzero(p)), int(np.count_nonzero(t))
    overlap = int(np.count_nonzero(p & t))
    comp = component_errors(p, t, connectivity)
    truth_empty = n_t == 0
    # nothing to segment on a negative patient: NaN, so that means are over thrombus-positive patients
    hd, penalized = (math.nan, False) if truth_empty else hd95(p, t, sp)
    vol_p, vol_t = n_p * voxel_mm3, n_t * voxel_mm3
    return {
        "dice": math.nan if truth_empty else 2.0 * overlap / (n_p + n_t),
        "overlap_voxels": overlap,
        "detected": math.nan if truth_empty else float(overlap >= 1),
        "detected_min_overlap": (
            math.nan if truth_empty else float(overlap >= int(min_overlap_voxels))
        ),
        "truth_empty": truth_empty,
        "pred_empty": n_p == 0,
        "truth_present": not truth_empty,
        "pred_present": n_p > 0,
        "volume_pred_mm3": vol_p,
        "volume_true_mm3": vol_t,
        "volume_error_mm3": vol_p - vol_t,
        "abs_volume_error_mm3": abs(vol_p - vol_t),
        "n_pred_components": comp["n_pred_components"],
        "n_true_components": comp["n_true_components"],
        "n_fp_components": comp["n_fp_components"],
        "fp_volume_mm3": comp["fp_voxels"] * voxel_mm3,
        "n_fn_components": comp["n_fn_components"],
        "fn_volume_mm3": comp["fn_voxels"] * voxel_mm3,
        "lesion_tp": comp["lesion_tp"],
        "lesion_f1": math.nan if truth_empty else _f1(
            comp["lesion_tp"], comp["n_fp_components"], comp["n_fn_components"], 1.0
        ),
        "hd95_mm": hd,
        "hd95_penalized": penalized,
    }


def evaluate_case(
    pred_thrombus,
    true_thrombus,
    spacing,
    pred_infarct=None,
    true_infarct=None,
    *,
    min_overlap_voxels: int = 1,
    connectivity: int = 26,
    presence_prob: float | None = None,
) -> dict:
    """Thrombus metrics plus ``infarct_dice`` and ``presence_prob`` for one patient (one TSV row).

    Args:
        pred_thrombus: predicted thrombus mask.
        true_thrombus: reference thrombus mask, same shape.
        spacing: voxel size in mm per axis.
        pred_infarct: predicted infarct mask, or None.
        true_infarct: reference infarct mask, or None (both or neither).
        min_overlap_voxels: overlap needed for ``detected_min_overlap``.
        connectivity: 6, 18 or 26.
        presence_prob: the prediction's probability that the patient has a
            thrombus, in [0, 1]; None when the prediction gives none.

    Returns:
        Flat dict: :func:`thrombus_metrics` keys, ``infarct_dice`` (NaN when
        no infarct pair is given) and ``presence_prob`` (NaN when None).
    """
    row = thrombus_metrics(
        pred_thrombus,
        true_thrombus,
        spacing,
        min_overlap_voxels=min_overlap_voxels,
        connectivity=connectivity,
    )
    if (pred_infarct is None) != (true_infarct is None):
        raise ValueError("give both pred_infarct and true_infarct, or neither")
    if pred_infarct is None:
        row["infarct_dice"] = math.nan
    else:
        pi, ti = _pair(pred_infarct, true_infarct, ("pred_infarct", "true_infarct"))
        if pi.shape != np.shape(pred_thrombus):
            raise ValueError(
                f"shape mismatch: infarct {pi.shape} vs thrombus {np.shape(pred_thrombus)}"
            )
        row["infarct_dice"] = dice(pi, ti)
    row["presence_prob"] = check_presence_prob(presence_prob)
    return row


def check_presence_prob(value) -> float:
    """``value`` as a float in [0, 1]; NaN for None (no probability given)."""
    if value is None:
        return NO_PRESENCE_PROB
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"presence_prob must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:  # NaN fails this too: "no probability" is None, not NaN
        raise ValueError(f"presence_prob must be in [0, 1], got {value!r}")
    return v
