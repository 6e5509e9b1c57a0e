"""Lesion-guided post-processing of a thrombus probability map (MIDL 2024).

Steps, each switchable, applied to ``prob >= threshold``:

1. ``remove_small``: drop components smaller than ``min_size_voxels`` (or,
   when given, ``min_volume_mm3``, which then replaces the voxel rule).
2. ``select_component``: with a non-empty infarct mask, keep the component
   nearest the infarct's centre of mass, plus every component whose distance
   to that centre is ≤ ``keep_within_mm``. A component's distance is that of
   its closest voxel (not its centroid), in mm: a thrombus is elongated and
   sits upstream of the infarct, so its nearest end is what matters. With
   ``proximity_mm`` > 0 the kept component is instead the one with the highest
   probability mass (sum of its probabilities) times ``exp(-distance /
   proximity_mm)``: the model's confidence then counts too, so a large, sure
   component in the artery upstream beats a speck of vein touching the infarct. Without
   an infarct (None or empty), keep the most confident component: highest
   ``max`` probability (default, so a small component with a sure core wins
   over a large lukewarm one) or highest ``mean``; ties go to the larger one.
   With ``same_side_mm`` and the grid's ``midline``, components whose centroid
   lies more than ``same_side_mm`` across the mid-sagittal plane from the
   infarct are not candidates: the culprit clot sits in the artery that feeds
   the infarct, on its side. Infarcts within ``same_side_mm`` of the midline
   (brainstem, both anterior cerebral arteries) and cases where no candidate
   is left keep every side.
   With ``selection="score"`` the step instead scores every candidate with a learned ``scorer``
   (:mod:`.candidates`) and keeps the best one only if its score reaches ``presence_threshold``,
   else none: the answer is then "no thrombus". ``info["presence_prob"]`` is the best score (0
   without a candidate); ``keep_within_mm``, ``proximity_mm`` and ``same_side_mm`` do not apply.
3. ``regrow``: add every connected region of ``prob >= regrow_threshold``
   touching a kept component, optionally limited to ``regrow_radius_mm``
   around it (thrombus borders are blurred, so the model is unsure there).

All components use ``connectivity`` (26 by default). Thresholds are inclusive.

:func:`postprocess_case` applies it to a harmonized case with the settings of an
:class:`~thrombseg.inference.settings.InferenceConfig`; :func:`case_midline` gives it the case's
mid-sagittal plane, :func:`~thrombseg.inference.candidates.case_frame` its position in the head.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.case import Case
from ..evaluation.metrics import check_spacing, label_components
from .candidates import (
    Components,
    Frame,
    check_scorer,
    checked_mask,
    checked_prob,
    component_features,
    find_components,
    nearest_distances,
    score_table,
    side_offsets,
)
from .settings import SELECTIONS, InferenceConfig

__all__ = ["case_midline", "postprocess_case", "postprocess_thrombus"]


def postprocess_thrombus(
    prob: np.ndarray, spacing, infarct_mask: np.ndarray | None = None, *, threshold: float = 0.5,
    min_size_voxels: int = 20, min_volume_mm3: float | None = None, keep_within_mm: float | None = None,
    proximity_mm: float | None = None, same_side_mm: float | None = None, midline: tuple[int, float] | None = None,
    regrow_threshold: float = 0.3, regrow_radius_mm: float | None = None, confidence: str = "max",
    remove_small: bool = True, select_component: bool = True, regrow: bool = True, connectivity: int = 26,
    selection: str = "rule", scorer: dict | None = None, presence_threshold: float = 0.5, frame: Frame | None = None,
) -> tuple[np.ndarray, dict]:
    """Turn a thrombus probability map into a cleaned binary mask.

    Args:
        prob: 3-D thrombus probabilities in [0, 1].
        spacing: voxel size in mm per axis.
        infarct_mask: binary infarct mask on the same grid, or None.
        threshold: foreground threshold.
        min_size_voxels: smallest component kept by ``remove_small``.
        min_volume_mm3: if given, used instead of ``min_size_voxels``.
        keep_within_mm: also keep components this close to the infarct centre.
        proximity_mm: length scale of the confidence-weighted selection; None or 0 = the nearest component.
        same_side_mm: midline margin of the same-side rule; None = off.
        midline: ``(axis, index)``: the array axis that runs left-right and the
            (fractional) index of the mid-sagittal plane on it; None = rule off.
        regrow_threshold: lower threshold of regrowth (≤ ``threshold``).
        regrow_radius_mm: limit regrowth to this distance from the kept component; None = unlimited.
        confidence: ``"max"`` or ``"mean"`` probability, used without infarct.
        remove_small, select_component, regrow: switch each step.
        connectivity: 6, 18 or 26.
        selection: ``"rule"`` (the rules above) or ``"score"`` (the learned ``scorer``).
        scorer: the candidate scorer (JSON of :func:`~thrombseg.inference.candidates.fit_scorer`).
        presence_threshold: ``"score"`` keeps a candidate only with a score >= this.
        frame: voxel axes and brain centre (:func:`~thrombseg.inference.candidates.case_frame`) for the
            scorer's position features; None = RAS array axes centred on the array.

    Returns:
        ``(mask, info)``: uint8 0/1 mask, and a dict describing each step
        (component counts, ``selection`` rule used, distances, voxels added; with ``"score"``,
        the scores, ``presence_prob`` and ``thrombus_present``).
    """
    prob = checked_prob(prob)
    sp = check_spacing(spacing)
    _check_settings(connectivity, threshold, regrow_threshold if regrow else None, confidence, min_size_voxels,
                    min_volume_mm3, keep_within_mm=keep_within_mm, same_side_mm=same_side_mm,
                    proximity_mm=proximity_mm, regrow_radius_mm=regrow_radius_mm)
    _check_selection(selection, scorer, presence_threshold)
    infarct = None if infarct_mask is None else checked_mask(infarct_mask, prob.shape)

    comps, keep = find_components(prob, sp, threshold, connectivity, min_size_voxels, min_volume_mm3, remove_small)
    info: dict = {"n_components_initial": comps.n, "n_removed_small": int((~keep).sum()), "selection": "disabled"}
    info["n_components_after_size"] = int(keep.sum())
    if select_component and selection == "score":
        keep = _select_by_score(comps, keep, prob, infarct, sp, info, scorer=scorer,
                                presence_threshold=presence_threshold, midline=midline, frame=frame)
    elif select_component:
        keep = _select(comps, keep, prob, infarct, sp, info, keep_within_mm=keep_within_mm,
                       proximity_mm=proximity_mm, same_side_mm=same_side_mm, midline=midline, confidence=confidence)
    info["kept_labels"] = [int(i) + 1 for i in np.flatnonzero(keep)]
    info["n_kept"] = len(info["kept_labels"])

    mask = np.isin(comps.labels, np.flatnonzero(keep) + 1) if comps.n else np.zeros(prob.shape, bool)
    info["voxels_before_regrow"] = int(mask.sum())
    if regrow and mask.any():
        mask = _regrow(mask, prob, sp, regrow_threshold, regrow_radius_mm, connectivity)
    info["voxels_added_by_regrow"] = int(mask.sum()) - info["voxels_before_regrow"]
    info["volume_mm3"] = float(mask.sum() * np.prod(sp))
    return mask.astype(np.uint8), info


def _check_settings(connectivity, threshold, regrow_threshold, confidence, min_size_voxels, min_volume_mm3,
                    **distances_mm) -> None:
    """ValueError for a setting out of range (``regrow_threshold`` None: regrowth is off)."""
    if connectivity not in (6, 18, 26):
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if regrow_threshold is not None and not 0.0 < regrow_threshold <= threshold:
        raise ValueError(f"regrow_threshold must be in (0, threshold={threshold}], got {regrow_threshold}")
    if confidence not in ("max", "mean"):
        raise ValueError(f"confidence must be 'max' or 'mean', got {confidence!r}")
    if min_size_voxels < 0 or (min_volume_mm3 is not None and min_volume_mm3 < 0):
        raise ValueError("minimum size must be >= 0")
    for name, value in distances_mm.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _check_selection(selection: str, scorer, presence_threshold) -> None:
    """ValueError for an unknown selection, a threshold outside [0, 1], or ``"score"`` without a valid scorer."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if not 0.0 <= presence_threshold <= 1.0:
        raise ValueError(f"presence_threshold must be in [0, 1], got {presence_threshold}")
    if selection == "score":
        check_scorer(scorer)


def _select(comps: Components, keep, prob, infarct, sp, info: dict, *, keep_within_mm, proximity_mm,
            same_side_mm, midline, confidence) -> np.ndarray:
    """Step 2: the components kept among those step 1 left; ``info`` records the rule used."""
    candidates = np.flatnonzero(keep)  # 0-based: label - 1
    info["selection"] = "none"
    if not candidates.size:
        return keep
    if infarct is not None and infarct.any():
        return keep & _near_infarct(comps, candidates, prob, infarct, sp, info, keep_within_mm=keep_within_mm,
                                    proximity_mm=proximity_mm, same_side_mm=same_side_mm, midline=midline)
    return _most_confident(comps, candidates, prob, confidence, info)


def _near_infarct(comps: Components, candidates, prob, infarct, sp, info: dict, *, keep_within_mm, proximity_mm,
                  same_side_mm, midline) -> np.ndarray:
    """The component nearest the infarct (or best by confidence x proximity), plus those within reach."""
    if same_side_mm is not None and midline is not None:
        same_side = _same_side(comps.labels, candidates, infarct, midline, sp, same_side_mm)
        if same_side.any():  # nothing on the infarct's side: the rule cannot choose, ignore it
            info["n_removed_other_side"] = int((~same_side).sum())
            candidates = candidates[same_side]
    centre_mm = np.array(ndimage.center_of_mass(infarct)) * sp
    dist = nearest_distances(comps.labels, comps.n, centre_mm, sp)
    if proximity_mm:
        mass = np.asarray(ndimage.sum(prob, comps.labels, candidates + 1), dtype=float)
        score = mass * np.exp(-dist[candidates] / proximity_mm)
        best = candidates[np.argmax(score)]
        info["selection"] = "confident_near_infarct"
        info["scores"] = {int(c) + 1: float(v) for c, v in zip(candidates, score)}
    else:
        best = candidates[np.argmin(dist[candidates])]
        info["selection"] = "nearest_infarct"
    chosen = dist <= (keep_within_mm if keep_within_mm is not None else -1.0)
    chosen[best] = True
    info["infarct_com_mm"] = centre_mm.tolist()
    info["distances_mm"] = {int(c) + 1: float(dist[c]) for c in candidates}
    return chosen


def _most_confident(comps: Components, candidates, prob, confidence: str, info: dict) -> np.ndarray:
    """Without an infarct: the component of highest max (or mean) probability, the larger on ties."""
    score_fn = ndimage.maximum if confidence == "max" else ndimage.mean
    scores = np.asarray(score_fn(prob, comps.labels, candidates + 1), dtype=float)
    # lexsort: last key is primary -> highest score, then largest size.
    best = candidates[np.lexsort((-comps.sizes[candidates], -scores))[0]]
    keep = np.zeros(comps.n, dtype=bool)
    keep[best] = True
    info["selection"] = f"most_confident_{confidence}"
    info["scores"] = {int(c) + 1: float(s) for c, s in zip(candidates, scores)}
    return keep


def _select_by_score(comps: Components, keep, prob, infarct, sp, info: dict, *, scorer: dict,
                     presence_threshold: float, midline, frame) -> np.ndarray:
    """The best-scoring candidate if its score reaches ``presence_threshold``, else none ("no thrombus")."""
    candidates = np.flatnonzero(keep)
    scores = score_table(component_features(comps, candidates, prob, sp, infarct, midline, frame), scorer)
    presence = float(scores.max()) if candidates.size else 0.0
    chosen = np.zeros(comps.n, dtype=bool)
    if candidates.size and presence >= presence_threshold:
        chosen[candidates[np.argmax(scores)]] = True
    info.update(selection="score", scores={int(c) + 1: float(v) for c, v in zip(candidates, scores)},
                presence_prob=presence, presence_threshold=float(presence_threshold),
                thrombus_present=bool(chosen.any()))
    return chosen


def _regrow(mask, prob, sp, regrow_threshold: float, regrow_radius_mm, connectivity: int) -> np.ndarray:
    """Step 3: add the regions of ``prob >= regrow_threshold`` that touch the kept mask."""
    low = prob >= regrow_threshold
    if regrow_radius_mm is not None:
        low &= ndimage.distance_transform_edt(~mask, sampling=sp) <= regrow_radius_mm
    low |= mask
    low_labels, _ = label_components(low, connectivity)
    touched = np.unique(low_labels[mask])
    return np.isin(low_labels, touched[touched > 0])


def _same_side(labels, cand, infarct, midline, sp, margin_mm: float) -> np.ndarray:
    """Which candidates (0-based labels) do not lie across the midline from the infarct."""
    infarct_off, offsets = side_offsets(labels, cand, infarct, midline, sp)
    if abs(infarct_off) <= margin_mm:
        return np.ones(cand.size, bool)
    return offsets >= -margin_mm


def case_midline(case: Case) -> tuple[int, float] | None:
    """``(left-right array axis, index of the mid-sagittal plane)`` of a harmonized case, or None.

    The axis comes from the grid's affine; the plane is the brain mask's centroid on it (the
    middle of the array without a mask). Oblique axial slabs are tilted about the left-right axis,
    which leaves the plane where it is; a head turned by 5 degrees moves it by about 5 mm at the
    front and back of the brain, half the same-side rule's 10 mm margin.
    """
    if case.affine is None:
        return None
    axis = int(np.argmax(np.abs(np.asarray(case.affine)[0, :3])))
    n = case.shape[axis]
    profile = None
    if case.brain is not None:
        other = tuple(a for a in range(3) if a != axis)
        profile = np.asarray(case.brain, bool).sum(axis=other).astype(float)
    if profile is None or profile.sum() == 0:
        return axis, (n - 1) / 2
    return axis, float((profile * np.arange(n)).sum() / profile.sum())


def postprocess_case(prob, infarct_mask, spacing, icfg: InferenceConfig, midline: tuple[int, float] | None = None,
                     frame: Frame | None = None) -> tuple[np.ndarray, dict]:
    """Lesion-guided post-processing with the settings of ``icfg`` (or plain thresholding).

    ``midline`` (see :func:`case_midline`) enables ``icfg.same_side_mm`` and the scorer's side feature;
    ``frame`` (:func:`~thrombseg.inference.candidates.case_frame`) places candidates in the head for the scorer.
    """
    if not icfg.postprocess:
        return (prob >= icfg.threshold).astype(np.uint8), {}
    return postprocess_thrombus(
        prob, spacing, infarct_mask if infarct_mask is not None and infarct_mask.any() else None,
        threshold=icfg.threshold, min_size_voxels=icfg.min_size_voxels, min_volume_mm3=icfg.min_volume_mm3,
        keep_within_mm=icfg.keep_within_mm, proximity_mm=icfg.proximity_mm, same_side_mm=icfg.same_side_mm,
        midline=midline, regrow_threshold=icfg.regrow_threshold, selection=icfg.selection, scorer=icfg.scorer,
        presence_threshold=icfg.presence_threshold, frame=frame)
