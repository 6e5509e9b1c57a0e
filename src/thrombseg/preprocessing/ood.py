"""Out-of-distribution guard: a profile of the training patients' inputs, and a new case checked against it.

The profile is written by :func:`thrombseg.preprocessing.harmonize.fit_landmarks` into the
``profile`` entry of ``landmarks.json``. That file is fitted on exactly the protocol's training
patients and every harmonization reads it, so a prediction finds the profile without reading any
training patient. It records, from the preprocessed images (before harmonization):

* per sequence, the spread over the training patients (min, q25, median, q75, max) of the
  intensity percentiles inside the brain mask that the Nyul fit uses (its cutoffs, quartiles and
  deciles): ``raw`` in the image's own units, and ``shape``, the same percentiles as a fraction of
  the patient's own p1-p99 range (what survives Nyul's per-image rescaling);
* the share of training patients with each sequence and the count of each sequence combination;
* the spread of the brain-mask volume (mL), the grid extent (mm per axis: the field of view after
  the crop to the head) and the grid's voxel spacing (mm per axis).

:func:`check_case` compares a case with the profile; each finding is one readable line. A value is
"far outside" when it lies beyond the training min/max by more than ``IQR_FACTOR`` training IQRs,
with a floor on that margin (``*_FLOOR``) so that a profile of a few patients (IQR 0) does not flag
noise, nor a patient whose center stores a sequence in other units than most training patients. A landmarks file without a profile (written by an earlier thrombseg) gives no check and a note.

numpy and json only: the workflow's predict rule (torch environment, no ANTs) reads the records.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: Version of the ``profile`` entry this module writes and reads.
PROFILE_VERSION = 1
#: A value beyond the training min/max by more than this many training IQRs is out of distribution.
IQR_FACTOR = 1.5
#: Least margin of a raw intensity percentile, as a fraction of the training span (lowest p1 to highest
#: p99 over the training patients): centers store a sequence in different units (phase in radians at
#: one, in vendor integers to +-4096 at another), and a patient in either is no outlier.
INTENSITY_FLOOR = 0.5
#: Least margin of a histogram-shape percentile (a fraction of the case's own p1-p99 range).
SHAPE_FLOOR = 0.15
#: Least margin of the brain-mask volume, as a fraction of the training median (partial coverage).
BRAIN_VOLUME_FLOOR = 0.25
#: Least margin of the grid extent per axis, as a fraction of the training median (field of view).
EXTENT_FLOOR = 0.25
#: Least margin of the voxel spacing per axis, as a fraction of the training median.
SPACING_FLOOR = 0.25
#: A sequence combination that fewer than this share of the training patients had all of is rare.
RARE_COMBINATION_SHARE = 0.05
AXES = ("x", "y", "z")
_SPREAD = ("min", "q25", "median", "q75", "max")


def landmark_percentiles(cutoff) -> list[float]:
    """The percentiles TorchIO's Nyul fit computes per image: its cutoffs, quartiles and deciles."""
    return sorted({100 * float(cutoff[0]), 100 * float(cutoff[1]), 25.0, 50.0, 75.0, *range(10, 100, 10)})


def intensity_landmarks(values: np.ndarray, percentiles) -> list[float]:
    """The ``percentiles`` of the voxels ``values`` (brain only), as the Nyul fit takes them."""
    return [float(x) for x in np.percentile(np.asarray(values, np.float64), percentiles)]


def patient_stats(sequences, brain: np.ndarray, spacing_mm, intensity: dict[str, list[float]]) -> dict:
    """What the profile records of one patient: sequences, brain volume, grid extent and spacing,
    and each sequence's intensity landmarks (``intensity_landmarks``)."""
    spacing = np.asarray(spacing_mm, float)
    return {"sequences": sorted(sequences),
            "brain_volume_ml": float(np.count_nonzero(brain) * spacing.prod() / 1000.0),
            "extent_mm": [float(x) for x in np.asarray(brain.shape) * spacing],
            "spacing_mm": [float(x) for x in spacing], "intensity": dict(intensity)}


def _round(x):
    """Six significant digits: a readable file whose bytes depend on the values only."""
    return [_round(v) for v in x] if isinstance(x, (list, np.ndarray)) else float(f"{float(x):.6g}")


def _spread(values) -> dict:
    """min, q25, median, q75 and max over patients (axis 0)."""
    v = np.asarray(values, float)
    q = np.percentile(v, [0, 25, 50, 75, 100], axis=0)
    return {k: _round(q[i]) for i, k in enumerate(_SPREAD)}


def _shape(landmarks) -> np.ndarray:
    """Landmarks as a fraction of their own p1-p99 range (0 for a constant image)."""
    p = np.asarray(landmarks, float)
    span = p[..., -1:] - p[..., :1]
    return np.divide(p - p[..., :1], span, out=np.zeros_like(p), where=span > 0)


def build_profile(stats: list[dict], percentiles, sequences) -> dict:
    """The profile of the training patients' :func:`patient_stats` (see the module doc)."""
    n = len(stats)
    combos: dict[str, int] = {}
    for s in stats:
        key = "+".join(s["sequences"])
        combos[key] = combos.get(key, 0) + 1
    intensity = {}
    for seq in sequences:
        rows = [s["intensity"][seq] for s in stats if seq in s["intensity"]]
        if rows:
            intensity[seq] = {"n": len(rows), "raw": _spread(rows), "shape": _spread(_shape(rows))}
    return {"version": PROFILE_VERSION, "n_subjects": n, "percentiles": _round(list(percentiles)),
            "sequence_share": {seq: _round(sum(seq in s["sequences"] for s in stats) / n) for seq in sequences},
            "combinations": dict(sorted(combos.items())), "intensity": intensity,
            "brain_volume_ml": _spread([s["brain_volume_ml"] for s in stats]),
            "extent_mm": _spread([s["extent_mm"] for s in stats]),
            "spacing_mm": _spread([s["spacing_mm"] for s in stats])}


# --------------------------------------------------------------------------------------------------
# the check
# --------------------------------------------------------------------------------------------------
def _beyond(value, spread: dict, floor) -> np.ndarray:
    """How far ``value`` lies outside [min - margin, max + margin] (0 inside), margin = max(IQR_FACTOR
    * IQR, floor); element-wise."""
    v = np.asarray(value, float)
    lo, hi = np.asarray(spread["min"], float), np.asarray(spread["max"], float)
    margin = np.maximum(IQR_FACTOR * (np.asarray(spread["q75"], float) - np.asarray(spread["q25"], float)), floor)
    return np.maximum(lo - margin - v, 0.0) + np.maximum(v - hi - margin, 0.0)


def _g(x) -> str:
    """Four significant digits, for messages."""
    return f"{float(x):.4g}"


def _intensity_findings(seq: str, landmarks, entry: dict, pct: list) -> list[str]:
    """Raw-scale and histogram-shape findings of one sequence."""
    out = []
    raw, shape = entry["raw"], entry["shape"]
    span = float(raw["max"][-1]) - float(raw["min"][0])
    far = _beyond(landmarks, raw, INTENSITY_FLOOR * abs(span))
    if far.any():
        i = int(np.argmax(far))
        out.append(f"{seq}: raw intensities far outside the training patients' (p{_g(pct[i])} = "
                   f"{_g(landmarks[i])} vs {_g(raw['min'][i])} to {_g(raw['max'][i])} in training; "
                   f"{int((far > 0).sum())} of {len(far)} percentiles beyond the tolerance)")
    case_shape = _shape(landmarks)
    far = _beyond(case_shape, shape, SHAPE_FLOOR)
    if far.any():
        i = int(np.argmax(far))
        out.append(f"{seq}: intensity histogram unlike the training patients' (p{_g(pct[i])} at "
                   f"{_g(case_shape[i])} of the p1-p99 range vs {_g(shape['min'][i])} to {_g(shape['max'][i])} "
                   "in training)")
    return out


def _sequence_findings(sequences: list[str], profile: dict) -> list[str]:
    """Sequences no training patient had, or a combination few had all of (patients with more
    sequences count: with modality dropout the model saw every subset of a patient's sequences)."""
    share = profile["sequence_share"]
    known = [s for s in sequences if s in share]
    unseen = [s for s in known if not share[s]]
    out = [f"{s}: no training patient had this sequence" for s in unseen]
    if unseen or not known:
        return out
    n = int(profile["n_subjects"])
    with_all = sum(c for combo, c in profile["combinations"].items() if set(known) <= set(combo.split("+")))
    if with_all / n < RARE_COMBINATION_SHARE:
        what = f"sequences {'+'.join(known)}" if len(known) > 1 else f"sequence {known[0]}"
        out.append(f"{what}: only {100 * with_all / n:.0f}% of the training patients ({with_all} of {n}) "
                   f"had {'all of them' if len(known) > 1 else 'it'}")
    return out


def _geometry_findings(stats: dict, profile: dict) -> list[str]:
    """Brain volume, field of view (grid extent) and voxel spacing outside the training range."""
    out = []
    vol = profile["brain_volume_ml"]
    if _beyond(stats["brain_volume_ml"], vol, BRAIN_VOLUME_FLOOR * vol["median"]).any():
        out.append(f"brain volume {stats['brain_volume_ml']:.0f} mL outside the training range "
                   f"{vol['min']:.0f} to {vol['max']:.0f} mL (partial coverage or a wrong brain mask?)")
    for key, what, floor in (("extent_mm", "field of view (grid extent)", EXTENT_FLOOR),
                             ("spacing_mm", "voxel spacing", SPACING_FLOOR)):
        spread = profile[key]
        far = _beyond(stats[key], spread, floor * np.asarray(spread["median"], float))
        for i in np.flatnonzero(far):
            out.append(f"{what} along {AXES[i]}: {_g(stats[key][i])} mm outside the training range "
                       f"{_g(spread['min'][i])} to {_g(spread['max'][i])} mm")
    return out


def check_case(stats: dict, profile: dict) -> list[str]:
    """One readable line per way the case (:func:`patient_stats`) lies outside the training profile."""
    pct = profile["percentiles"]
    out = _sequence_findings(stats["sequences"], profile)
    for seq, landmarks in stats["intensity"].items():
        if seq in profile["intensity"]:
            out += _intensity_findings(seq, landmarks, profile["intensity"][seq], pct)
    return out + _geometry_findings(stats, profile)


def no_check(note: str) -> dict:
    """The record of a case that could not be checked: no warnings, ``out_of_distribution`` None."""
    return {"checked": False, "out_of_distribution": None, "warnings": [], "note": note}


def case_record(stats: dict, profile: dict | None, source: str) -> dict:
    """``{"checked", "out_of_distribution", "warnings", "note"}`` of a case against ``profile`` (the
    ``profile`` entry of the landmarks file ``source``); never raises: a guard must not stop a prediction."""
    if not profile:
        return no_check(f"{source}: no training profile (landmarks fitted by an earlier thrombseg): "
                        "no out-of-distribution check")
    if profile.get("version") != PROFILE_VERSION:
        return no_check(f"{source}: training profile version {profile.get('version')!r} not understood "
                        f"(this thrombseg reads {PROFILE_VERSION}): no out-of-distribution check")
    try:
        found = check_case(stats, profile)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return no_check(f"{source}: unreadable training profile ({type(exc).__name__}: {exc}): "
                        "no out-of-distribution check")
    return {"checked": True, "out_of_distribution": bool(found), "warnings": found, "note": None}


def harmonized_record(case_dir: str | Path, subject: str) -> dict:
    """The ``ood`` record that harmonization wrote into ``<subject>_arrays.json`` (a note when absent)."""
    path = Path(case_dir) / f"{subject}_arrays.json"
    try:
        record = json.loads(path.read_text()).get("ood")
    except (OSError, ValueError):
        record = None
    return record or no_check(f"{path}: harmonized by an earlier thrombseg: no out-of-distribution check")
