"""Candidate thrombi: the connected components of a thresholded probability map, their features, and
a learned scorer that ranks them and says whether any of them is a thrombus.

A patient's raw map holds a dozen false components besides the culprit clot. Post-processing
(:mod:`.postprocess`) labels them with :func:`find_components`; with ``selection: score`` it keeps the
best-scoring candidate only when its score reaches ``presence_threshold``, so "no thrombus" becomes a
possible answer. The scorer is a logistic regression on :data:`FEATURES`, fitted by the tuning
(:mod:`.tune`) on the validation patients' candidates (label: the component overlaps the true
thrombus), stored as plain JSON in ``postprocess.json`` and applied with numpy alone
(:func:`score_table`): prediction needs no scikit-learn and reads no pickle.

Features of one candidate (one row of :func:`candidate_table`):

* ``log_volume_mm3``, ``log_mass_mm3``: its volume, and its probability mass (sum of its
  probabilities times the voxel volume), both in mm^3 so that grids of any spacing compare.
* ``prob_max``, ``prob_mean``: the model's confidence.
* ``elongation``: square root of the largest over the smallest principal variance of its voxels
  (mm, each voxel counted as a box): 1 for a ball, the length/width ratio for a rod (a clot fills
  a vessel).
* ``distance_mm``: from the infarct's centre of mass to its closest voxel, as the rule selection
  measures it; :data:`DISTANCE_CAP_MM` when farther or without an infarct (``has_infarct`` 0).
* ``side_mm``: its centroid's signed offset from the mid-sagittal plane, positive on the infarct's
  side (the same-side rule's measure); 0 without an infarct or a midline.
* ``lateral_mm``, ``anterior_mm``, ``superior_mm``: its centroid relative to the brain's centre in
  RAS mm, a crude proxy of the vessel territory (basilar: medial and low; MCA: lateral).
* ``mass_rank``: 1 for the candidate of largest mass in the patient, 2 for the next...
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage

from ..core.case import Case
from ..evaluation.metrics import as_binary, check_spacing, label_components
from .settings import InferenceError

__all__ = ["DISTANCE_CAP_MM", "FEATURES", "PRESENCE_THRESHOLD_NO_NEGATIVES", "SCORER_C", "Components", "Frame",
           "candidate_table", "case_frame", "check_scorer", "choose_presence_threshold", "component_features",
           "find_components", "fit_pipeline", "fit_scorer", "out_of_fold_scores", "patient_presence", "score_table",
           "scorer_json"]

FEATURES = ("log_volume_mm3", "log_mass_mm3", "prob_max", "prob_mean", "elongation", "distance_mm", "has_infarct",
            "side_mm", "lateral_mm", "anterior_mm", "superior_mm", "mass_rank")
COLUMNS = ("label", "n_voxels", "volume_mm3", "mass_mm3", *FEATURES)
DISTANCE_CAP_MM = 150.0  # about a brain's length: farther, or no infarct, says nothing more
SCORER_MODEL = "logistic_regression"
SCORER_C = 0.1  # inverse L2 strength, strong: a validation set holds a few hundred candidates of a few dozen patients
SCORER_CLASS_WEIGHT = "balanced"  # about one true candidate per dozen false ones
SCORER_MAX_ITER = 1000
SCORER_FOLDS = 5  # folds by patient of the out-of-fold scores the presence threshold is chosen on
PRESENCE_THRESHOLD_NO_NEGATIVES = 0.0  # no negative patient to trade against: never drop a candidate


class Components(NamedTuple):
    """The connected components of a thresholded map."""

    labels: np.ndarray  # 0 background, 1..n components
    n: int
    sizes: np.ndarray  # voxels of components 1..n


class Frame(NamedTuple):
    """Where a grid's voxels lie in the head."""

    axes: np.ndarray  # 3x3: column a is the RAS mm step of one voxel along array axis a
    centre: np.ndarray  # voxel index of the brain's centroid


def checked_prob(prob) -> np.ndarray:
    """``prob`` as float32 after checking it is a 3-D, finite map in [0, 1]."""
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"prob must be 3-D, got shape {prob.shape}")
    if not np.issubdtype(prob.dtype, np.number) or np.issubdtype(prob.dtype, np.complexfloating):
        raise ValueError(f"prob must be real numeric, got dtype {prob.dtype}")
    prob = prob.astype(np.float32, copy=False)
    if not np.isfinite(prob).all():
        raise ValueError("prob contains NaN or inf")
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise ValueError(f"prob must lie in [0, 1], got [{prob.min()}, {prob.max()}]")
    return prob


def checked_mask(mask, shape, name: str = "infarct_mask") -> np.ndarray:
    """A binary mask as bool, on the probability map's grid."""
    out = as_binary(mask, name)
    if out.shape != shape:
        raise ValueError(f"shape mismatch: prob {shape} vs {name} {out.shape}")
    return out


def find_components(prob: np.ndarray, sp: np.ndarray, threshold: float, connectivity: int = 26,
                    min_size_voxels: int = 20, min_volume_mm3: float | None = None,
                    remove_small: bool = True) -> tuple[Components, np.ndarray]:
    """The components of ``prob >= threshold`` and which of them (0-based) are large enough to be
    candidates: ``min_volume_mm3`` when given, else ``min_size_voxels`` (all with ``remove_small`` off)."""
    labels, n = label_components(prob >= threshold, connectivity)
    comps = Components(labels, n, np.bincount(labels.ravel(), minlength=n + 1)[1:])
    if not (remove_small and n):
        return comps, np.ones(n, dtype=bool)
    if min_volume_mm3 is not None:
        return comps, comps.sizes * float(np.prod(sp)) >= min_volume_mm3
    return comps, comps.sizes >= min_size_voxels


def nearest_distances(labels: np.ndarray, n: int, point_mm: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Distance (mm) from ``point_mm`` to the closest voxel of each label 1..n."""
    idx = np.nonzero(labels)
    d = np.sqrt(sum(((idx[a] * sp[a]) - point_mm[a]) ** 2 for a in range(3)))
    lab = labels[idx]
    out = np.full(n + 1, np.inf)
    np.minimum.at(out, lab, d)
    return out[1:]


def side_offsets(labels: np.ndarray, cand: np.ndarray, infarct: np.ndarray, midline: tuple[int, float],
                 sp: np.ndarray) -> tuple[float, np.ndarray]:
    """The infarct centre's offset (mm) from the mid-sagittal plane, and each candidate's (0-based labels)
    centroid offset signed so that positive is the infarct's side."""
    axis, mid = midline
    if not 0 <= axis < 3:
        raise ValueError(f"midline axis must be 0, 1 or 2, got {axis}")
    infarct_off = (ndimage.center_of_mass(infarct)[axis] - mid) * sp[axis]
    coord = np.indices(labels.shape, sparse=True)[axis]
    comp_off = (np.asarray(ndimage.mean(np.broadcast_to(coord, labels.shape), labels, cand + 1)) - mid) * sp[axis]
    return infarct_off, np.sign(infarct_off) * comp_off


def case_frame(case: Case) -> Frame:
    """The voxel -> RAS mm axes of a harmonized case (its affine) and its brain mask's centroid.

    Without an affine the array axes are taken as RAS (ingest makes them canonical); without a brain
    mask the centre is the array's middle.
    """
    axes = np.asarray(case.affine, float)[:3, :3] if case.affine is not None else np.diag(case.spacing)
    centre = (np.asarray(case.shape, float) - 1) / 2
    if case.brain is not None and np.asarray(case.brain).any():
        centre = np.asarray(ndimage.center_of_mass(np.asarray(case.brain) > 0))
    return Frame(axes, centre)


def component_features(comps: Components, cand, prob: np.ndarray, sp: np.ndarray, infarct: np.ndarray | None = None,
                       midline: tuple[int, float] | None = None, frame: Frame | None = None) -> pd.DataFrame:
    """The feature table (module doc) of the candidates ``cand`` (0-based labels), one row each.

    ``infarct``: bool mask or None (None and empty: no infarct); ``frame`` None: RAS array axes
    centred on the array's middle.
    """
    cand = np.asarray(cand, dtype=int)
    if not cand.size:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS}).astype({"label": int, "n_voxels": int})
    if frame is None:
        frame = Frame(np.diag(sp), (np.asarray(prob.shape, float) - 1) / 2)
    labels_1 = cand + 1
    voxel_mm3 = float(np.prod(sp))
    n_voxels = comps.sizes[cand]
    mass = np.asarray(ndimage.sum(prob, comps.labels, labels_1), float) * voxel_mm3
    centroid, elongation = _shape(comps, cand, sp)
    offset = (centroid - frame.centre) @ np.asarray(frame.axes, float).T  # RAS mm from the brain's centre
    has_infarct = infarct is not None and bool(infarct.any())
    distance = np.full(cand.size, DISTANCE_CAP_MM)
    side = np.zeros(cand.size)
    if has_infarct:
        centre_mm = np.array(ndimage.center_of_mass(infarct)) * sp
        distance = np.minimum(nearest_distances(comps.labels, comps.n, centre_mm, sp)[cand], DISTANCE_CAP_MM)
        if midline is not None:
            side = side_offsets(comps.labels, cand, infarct, midline, sp)[1]
    table = pd.DataFrame({
        "label": labels_1, "n_voxels": n_voxels, "volume_mm3": n_voxels * voxel_mm3, "mass_mm3": mass,
        "log_volume_mm3": np.log(n_voxels * voxel_mm3), "log_mass_mm3": np.log(mass),
        "prob_max": np.asarray(ndimage.maximum(prob, comps.labels, labels_1), float),
        "prob_mean": mass / (n_voxels * voxel_mm3), "elongation": elongation, "distance_mm": distance,
        "has_infarct": float(has_infarct), "side_mm": side, "lateral_mm": np.abs(offset[:, 0]),
        "anterior_mm": offset[:, 1], "superior_mm": offset[:, 2]})
    table["mass_rank"] = table["mass_mm3"].rank(ascending=False, method="min")
    return table[list(COLUMNS)]


def _shape(comps: Components, cand: np.ndarray, sp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (voxel index) and elongation of the candidates, from their voxels' first and second moments."""
    idx = np.nonzero(comps.labels)
    lab = comps.labels[idx]
    count = np.bincount(lab, minlength=comps.n + 1)[cand + 1].astype(float)
    pts = [idx[a].astype(float) for a in range(3)]
    mean = np.stack([np.bincount(lab, weights=pts[a], minlength=comps.n + 1)[cand + 1] / count for a in range(3)], 1)
    cov = np.empty((cand.size, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            second = np.bincount(lab, weights=pts[a] * pts[b], minlength=comps.n + 1)[cand + 1] / count
            cov[:, a, b] = cov[:, b, a] = (second - mean[:, a] * mean[:, b]) * sp[a] * sp[b]
    cov += np.diag(sp ** 2 / 12)  # each voxel is a box, not a point: a single voxel has extent too
    eig = np.linalg.eigvalsh(cov)  # ascending
    return mean, np.sqrt(eig[:, -1] / eig[:, 0])


def candidate_table(prob, spacing, infarct_mask=None, *, threshold: float = 0.5, min_size_voxels: int = 20,
                    min_volume_mm3: float | None = None, remove_small: bool = True, connectivity: int = 26,
                    midline: tuple[int, float] | None = None, frame: Frame | None = None,
                    truth=None) -> pd.DataFrame:
    """The features of every candidate of a probability map: the components post-processing chooses
    from (same threshold and size rule), one row each (module doc).

    ``truth``: the true thrombus mask; adds column ``is_thrombus`` (the candidate overlaps it).
    """
    prob = checked_prob(prob)
    sp = check_spacing(spacing)
    infarct = None if infarct_mask is None else checked_mask(infarct_mask, prob.shape)
    comps, keep = find_components(prob, sp, threshold, connectivity, min_size_voxels, min_volume_mm3, remove_small)
    table = component_features(comps, np.flatnonzero(keep), prob, sp, infarct, midline, frame)
    if truth is not None:
        true_mask = checked_mask(truth, prob.shape, "truth")
        hit = np.zeros(comps.n + 1, dtype=bool)
        hit[np.unique(comps.labels[true_mask])] = True
        table["is_thrombus"] = hit[table["label"].to_numpy(int)]
    return table


# ---------------------------------------------------------------------------- the scorer
def fit_pipeline(table: pd.DataFrame, is_thrombus, c: float = SCORER_C):
    """scikit-learn pipeline (standardization, then balanced L2 logistic regression) fitted on the
    :data:`FEATURES` of ``table``; scikit-learn is imported here only (fitting happens in the tuning)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(is_thrombus, dtype=bool)
    if y.all() or not y.any():
        raise InferenceError(f"the candidate scorer needs candidates of both kinds: {int(y.sum())} of {y.size} "
                             "overlap a thrombus")
    model = LogisticRegression(C=c, class_weight=SCORER_CLASS_WEIGHT, max_iter=SCORER_MAX_ITER)
    return make_pipeline(StandardScaler(), model).fit(table[list(FEATURES)].to_numpy(float), y)


def scorer_json(pipeline) -> dict:
    """The fitted pipeline as plain JSON: what :func:`score_table` needs, and how it was fitted."""
    from sklearn import __version__

    scaler, model = pipeline[0], pipeline[-1]
    return {"model": SCORER_MODEL, "features": list(FEATURES), "mean": scaler.mean_.tolist(),
            "scale": scaler.scale_.tolist(), "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0]),
            "C": float(model.C), "class_weight": SCORER_CLASS_WEIGHT, "sklearn_version": __version__}


def fit_scorer(table: pd.DataFrame, is_thrombus, c: float = SCORER_C) -> dict:
    """The scorer (JSON) fitted on the candidates of ``table`` labelled ``is_thrombus``."""
    return scorer_json(fit_pipeline(table, is_thrombus, c))


def check_scorer(scorer) -> dict:
    """``scorer`` after checking it is a scorer of :func:`scorer_json` (InferenceError naming the fault)."""
    if not isinstance(scorer, dict) or scorer.get("model") != SCORER_MODEL:
        raise InferenceError(f"candidate scorer: expected a mapping with model {SCORER_MODEL!r}, got {scorer!r:.80}")
    features = scorer.get("features")
    if not isinstance(features, list) or not features or set(features) - set(FEATURES):
        raise InferenceError(f"candidate scorer: features must be a list of {', '.join(FEATURES)}, got {features!r}")
    for key in ("mean", "scale", "coef"):
        values = scorer.get(key)
        if not isinstance(values, list) or len(values) != len(features) or not all(_finite(v) for v in values):
            raise InferenceError(f"candidate scorer: {key} must hold {len(features)} finite numbers, got {values!r}")
    if not all(v > 0 for v in scorer["scale"]) or not _finite(scorer.get("intercept")):
        raise InferenceError("candidate scorer: scales must be > 0 and the intercept a finite number")
    return scorer


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def score_table(table: pd.DataFrame, scorer: dict) -> np.ndarray:
    """Each candidate's probability of being the thrombus under ``scorer`` (numpy only: the sigmoid of
    the standardized linear model)."""
    check_scorer(scorer)
    x = table[scorer["features"]].to_numpy(float)
    z = ((x - np.asarray(scorer["mean"])) / np.asarray(scorer["scale"])) @ np.asarray(scorer["coef"])
    return np.exp(-np.logaddexp(0.0, -(z + scorer["intercept"])))  # sigmoid, without overflow


def out_of_fold_scores(table: pd.DataFrame, is_thrombus, subjects, c: float = SCORER_C,
                       n_folds: int = SCORER_FOLDS) -> tuple[np.ndarray, str]:
    """Each candidate's score by a scorer fitted without its patient's candidates (patients dealt
    round-robin into ``n_folds`` folds), and how the scores were made.

    In-sample scores (the scorer fitted on all) when fewer than two patients have candidates or a
    fold leaves candidates of one kind only: the text then says so.
    """
    y = np.asarray(is_thrombus, dtype=bool)
    subjects = np.asarray(subjects).tolist()
    order = list(dict.fromkeys(subjects))  # first appearance: the tuning's patient order
    k = min(n_folds, len(order))
    if k >= 2:
        fold = np.array([order.index(s) % k for s in subjects])
        scores = np.empty(len(y))
        for f in range(k):
            train = fold != f
            if y[train].all() or not y[train].any():
                break
            scores[~train] = score_table(table[~train], fit_scorer(table[train], y[train], c))
        else:
            return scores, f"out-of-fold: {k} folds by patient"
    return score_table(table, fit_scorer(table, y, c)), ("in-sample: too few patients, or a fold without "
                                                          "candidates of both kinds, for out-of-fold scores")


def patient_presence(scores, subjects, all_subjects, keep=None) -> np.ndarray:
    """Each patient's (or map's: ``subjects`` may be any grouping key) presence probability: its best
    candidate's score (among ``keep`` when given), 0 without a candidate."""
    scores = np.asarray(scores, float)
    subjects = np.asarray(subjects)
    if keep is not None:
        keep = np.asarray(keep, dtype=bool)
        scores, subjects = scores[keep], subjects[keep]
    best = pd.Series(scores).groupby(subjects).max()
    return np.array([float(best.get(s, 0.0)) for s in all_subjects])


def choose_presence_threshold(presence, truth_present, pseudo_negative=None) -> dict:
    """The presence threshold (a patient is called positive when its presence >= it), and why.

    The negatives it trades against are the thrombus-negative patients and, in ``pseudo_negative``,
    each positive patient's presence without its thrombus (its best *false* candidate): the same brain
    with the clot gone, as after recanalisation. Pseudo-negatives let a validation set without a
    negative patient choose a threshold at all, and a small one choose it on more than a couple.

    Of the thresholds of highest Youden's J (sensitivity + specificity - 1, the balanced accuracy's
    argmax), the lowest (a missed clot costs more than a false alarm), moved halfway down to the next
    lower presence: the same validation result, with a margin on both sides. Without any negative:
    :data:`PRESENCE_THRESHOLD_NO_NEGATIVES`, which keeps every candidate, hence every detection.
    """
    p = np.asarray(presence, float)
    truth = np.asarray(truth_present, dtype=bool)
    if not truth.any():
        raise ValueError("choosing a presence threshold needs at least one thrombus-positive patient")
    pseudo = np.zeros(0) if pseudo_negative is None else np.asarray(pseudo_negative, float)
    pos, neg = p[truth], np.concatenate([p[~truth], pseudo])
    if neg.size == 0:
        return {"threshold": PRESENCE_THRESHOLD_NO_NEGATIVES,
                "rule": "no thrombus-negative validation patient: specificity cannot be measured, so the "
                        "threshold keeps every candidate (every validation detection)"}
    best = None
    values = np.concatenate([pos, neg])
    for t in np.unique(values):  # ascending: strict '>' keeps the lowest threshold on ties
        sens, spec = float((pos >= t).mean()), float((neg < t).mean())
        if best is None or sens + spec - 1 > best["youden_j"]:
            best = {"threshold": float(t), "sensitivity": sens, "specificity": spec, "youden_j": sens + spec - 1}
    below = values[values < best["threshold"]]
    if below.size:
        best["threshold"] = float((best["threshold"] + below.max()) / 2)
    return best | {"rule": f"highest Youden's J of patient-level presence on {pos.size} positive, "
                           f"{int((~truth).sum())} negative and {pseudo.size} pseudo-negative validation maps "
                           "(a map: a patient with one set of sequences; a pseudo-negative: a positive one without "
                           "its thrombus) (lowest on ties), halfway down to the next lower presence"}
