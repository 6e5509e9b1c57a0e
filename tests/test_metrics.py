"""Metrics vs an independent implementation on real ISLES'22 masks, and the
empty-case rules on synthetic masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from thrombseg.evaluation import metrics as M

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"
ISLES = REAL / "isles22"


# ---------------------------------------------------------------- reference
# Written independently of the module: scipy.ndimage.label instead of cc3d,
# set operations instead of bincount, explicit neighbour test + KD-tree
# instead of erosion + EDT.


def _ref_surface(m: np.ndarray) -> np.ndarray:
    """Mask voxels with a 6-neighbour outside the mask (or outside the image)."""
    pad = np.pad(m, 1, constant_values=False)
    inner = np.ones_like(m)
    for ax in range(3):
        for step in (-1, 1):
            inner &= np.roll(pad, step, axis=ax)[1:-1, 1:-1, 1:-1]
    return m & ~inner


def _ref_hd95(p, t, spacing):
    sp_pts = np.argwhere(_ref_surface(p)) * spacing
    st_pts = np.argwhere(_ref_surface(t)) * spacing
    d1, _ = cKDTree(st_pts).query(sp_pts)
    d2, _ = cKDTree(sp_pts).query(st_pts)
    return float(np.percentile(np.concatenate([d1, d2]), 95))


def _ref_components(m):
    lab, n = ndimage.label(m, structure=np.ones((3, 3, 3), bool))
    return lab, n


def _ref_metrics(p, t, spacing, min_overlap):
    spacing = np.asarray(spacing, float)
    vox = float(np.prod(spacing))
    sp_idx, st_idx = set(np.flatnonzero(p)), set(np.flatnonzero(t))
    inter = len(sp_idx & st_idx)
    lp, n_p = _ref_components(p)
    lt, n_t = _ref_components(t)
    tp = fn = fp = 0
    fn_vox = fp_vox = 0
    for k in range(1, n_t + 1):
        comp = lt == k
        if (comp & p).any():
            tp += 1
        else:
            fn += 1
            fn_vox += comp.sum()
    for k in range(1, n_p + 1):
        comp = lp == k
        if not (comp & t).any():
            fp += 1
            fp_vox += comp.sum()
    return {
        "dice": 2 * inter / (len(sp_idx) + len(st_idx)),
        "overlap_voxels": inter,
        "detected": float(inter >= 1),
        "detected_min_overlap": float(inter >= min_overlap),
        "volume_error_mm3": (len(sp_idx) - len(st_idx)) * vox,
        "abs_volume_error_mm3": abs(len(sp_idx) - len(st_idx)) * vox,
        "n_pred_components": n_p,
        "n_true_components": n_t,
        "n_fp_components": fp,
        "fp_volume_mm3": fp_vox * vox,
        "n_fn_components": fn,
        "fn_volume_mm3": fn_vox * vox,
        "lesion_tp": tp,
        "lesion_f1": tp / (tp + (fp + fn) / 2),
        "hd95_mm": _ref_hd95(p, t, spacing),
    }


# ---------------------------------------------------------------- real data


def _load(path: Path):
    nib = pytest.importorskip("nibabel")
    img = nib.load(str(path))
    return np.asarray(img.dataobj) > 0, tuple(float(z) for z in img.header.get_zooms()[:3])


def _shift(m, offset):
    """Shift with zero fill (np.roll would wrap lesions around the image)."""
    out = np.zeros_like(m)
    src = tuple(slice(max(-o, 0), m.shape[a] - max(o, 0)) for a, o in enumerate(offset))
    dst = tuple(slice(max(o, 0), m.shape[a] - max(-o, 0)) for a, o in enumerate(offset))
    out[dst] = m[src]
    return out


@pytest.fixture(scope="module")
def isles_masks():
    files = {
        "0001": ISLES / "sub-strokecase0001/sub-strokecase0001_ses-0001_msk.nii.gz",
        "0002": ISLES / "masks_only/sub-strokecase0002_ses-0001_msk.nii.gz",
        "0003": ISLES / "masks_only/sub-strokecase0003_ses-0001_msk.nii.gz",
    }
    absent = [str(f) for f in files.values() if not f.exists()]
    if absent:
        pytest.skip(f"real ISLES'22 masks not available (fresh clone?): {absent}")
    return {k: _load(f) for k, f in files.items()}


def _real_pairs(masks):
    m1, _ = masks["0001"]
    m2, _ = masks["0002"]
    m3, _ = masks["0003"]
    cross = ndimage.generate_binary_structure(3, 1)
    lab3, _ = _ref_components(m3)
    big3 = np.isin(lab3, np.flatnonzero(np.bincount(lab3.ravel())[1:] >= 10) + 1)
    return {
        "0001_dilated": (ndimage.binary_dilation(m1, cross), m1),
        "0001_eroded": (ndimage.binary_erosion(m1, cross), m1),
        "0001_shifted": (_shift(m1, (2, -1, 1)), m1),
        "0002_shifted": (_shift(m2, (1, 3, -2)), m2),
        "0002_dilated_box": (ndimage.binary_dilation(m2, np.ones((3, 3, 3), bool)), m2),
        "0002_vs_0003": (m2, m3),
        "0003_small_pieces_removed": (big3, m3),
        "0003_shifted_plus_0002": (_shift(m3, (0, 1, 1)) | m2, m3),
    }


@pytest.mark.parametrize("spacing", [None, (0.9, 1.3, 3.0)], ids=["native", "anisotropic"])
def test_real_isles22_masks_match_independent_implementation(isles_masks, spacing):
    for name, (pred, truth) in _real_pairs(isles_masks).items():
        sp = spacing or isles_masks["0001" if name.startswith("0001") else "0002"][1]
        got = M.thrombus_metrics(pred, truth, sp, min_overlap_voxels=10)
        ref = _ref_metrics(pred, truth, sp, 10)
        for key, want in ref.items():
            assert got[key] == pytest.approx(want, abs=1e-6, rel=0), (name, key)
        assert got["hd95_penalized"] is False


def test_real_mask_identity_and_swap(isles_masks):
    m3, sp = isles_masks["0003"]
    r = M.thrombus_metrics(m3, m3, sp)
    assert r["dice"] == 1 and r["hd95_mm"] == 0 and r["lesion_f1"] == 1
    assert r["n_true_components"] == 46  # one-voxel pieces counted as lesions
    m2, _ = isles_masks["0002"]
    a, b = M.hd95(m2, m3, sp), M.hd95(m3, m2, sp)
    assert a[0] == pytest.approx(b[0], abs=1e-9)  # symmetric


# ---------------------------------------------------------------- empty cases

SHAPE = (10, 12, 8)
SP = (1.0, 0.5, 2.0)
DIAG = math.sqrt(10**2 + 6**2 + 16**2)


def _cube(lo, hi, shape=SHAPE):
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_both_empty():
    """A negative patient rightly answered 'no thrombus': no Dice/HD95/F1 (means are over positives)."""
    z = np.zeros(SHAPE, bool)
    r = M.thrombus_metrics(z, z, SP)
    assert math.isnan(r["dice"]) and math.isnan(r["hd95_mm"]) and not r["hd95_penalized"]
    assert math.isnan(r["detected"]) and math.isnan(r["detected_min_overlap"])
    assert math.isnan(r["lesion_f1"]) and r["n_fp_components"] == r["n_fn_components"] == 0
    assert r["truth_empty"] and r["pred_empty"] and r["volume_error_mm3"] == 0
    # the plain functions keep ISLES'22's empty values (infarct_dice is dice: 1 for two empty masks)
    assert M.dice(z, z) == 1.0 and M.hd95(z, z, SP) == (0.0, False) and M.lesion_f1(z, z) == 1.0
    assert M.evaluate_case(z, z, SP, z, z)["infarct_dice"] == 1.0


def test_missed_lesion_gets_finite_penalty_and_flag():
    t = _cube((2, 2, 2), (4, 4, 3))
    r = M.thrombus_metrics(np.zeros(SHAPE, bool), t, SP)
    assert r["dice"] == 0.0 and r["detected"] == 0.0 and r["lesion_f1"] == 0.0
    assert r["hd95_mm"] == pytest.approx(DIAG) and r["hd95_penalized"] is True
    assert math.isfinite(r["hd95_mm"])
    assert r["n_fn_components"] == 1 and r["fn_volume_mm3"] == pytest.approx(4 * 1.0)
    assert r["volume_error_mm3"] == pytest.approx(-4.0)


def test_false_positive_on_empty_truth():
    p = _cube((0, 0, 0), (1, 1, 1)) | _cube((5, 5, 5), (7, 6, 6))
    r = M.thrombus_metrics(p, np.zeros(SHAPE, bool), SP)
    assert math.isnan(r["dice"]) and math.isnan(r["detected"])  # scored by its false positives instead
    assert r["n_fp_components"] == 2 and r["fp_volume_mm3"] == pytest.approx(3 * 1.0)
    assert r["hd95_penalized"] is False and math.isnan(r["hd95_mm"])
    assert math.isnan(r["lesion_f1"]) and r["pred_present"] and not r["truth_present"]


def test_detection_min_overlap_and_diagonal_components():
    t = _cube((2, 2, 2), (6, 6, 6))
    p = _cube((5, 5, 5), (7, 7, 7))  # overlaps t in 1 voxel
    p[0, 0, 0] = True
    p[1, 1, 1] = True  # diagonal neighbours: one component under 26-connectivity
    r = M.thrombus_metrics(p, t, SP, min_overlap_voxels=2)
    assert r["overlap_voxels"] == 1 and r["detected"] == 1.0
    assert r["detected_min_overlap"] == 0.0
    assert r["n_fp_components"] == 1 and r["fp_volume_mm3"] == pytest.approx(2.0)
    assert r["lesion_f1"] == pytest.approx(1 / (1 + 0.5))
    r6 = M.thrombus_metrics(p, t, SP, connectivity=6)
    assert r6["n_fp_components"] == 2


def test_hd95_anisotropic_single_voxels():
    p = _cube((0, 0, 0), (1, 1, 1))
    t = _cube((0, 0, 4), (1, 1, 5))
    assert M.hd95(p, t, (1, 1, 2.5)) == (pytest.approx(10.0), False)


def test_evaluate_case_infarct_dice():
    t = _cube((2, 2, 2), (4, 4, 4))
    inf_t = _cube((0, 0, 0), (5, 5, 5))
    inf_p = _cube((0, 0, 0), (5, 5, 4))
    r = M.evaluate_case(t, t, SP, inf_p, inf_t)
    assert r["infarct_dice"] == pytest.approx(2 * 100 / (100 + 125))
    assert math.isnan(M.evaluate_case(t, t, SP)["infarct_dice"])
    with pytest.raises(ValueError, match="both"):
        M.evaluate_case(t, t, SP, pred_infarct=inf_p)


def test_validation_errors():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        M.thrombus_metrics(a, np.zeros((4, 4, 5), bool), SP)
    with pytest.raises(ValueError, match="binary"):
        M.thrombus_metrics(np.full((4, 4, 4), 0.7), a, SP)
    with pytest.raises(ValueError, match="3 values"):
        M.thrombus_metrics(a, a, (1, 1))
    with pytest.raises(ValueError, match="positive"):
        M.thrombus_metrics(a, a, (1, 0, 1))
    with pytest.raises(ValueError, match="3-D"):
        M.dice(np.zeros((4, 4)), np.zeros((4, 4)))


def test_patient_presence_columns():
    t = _cube((2, 2, 2), (4, 4, 3))
    p = _cube((6, 6, 5), (7, 7, 6)) | _cube((0, 0, 0), (1, 1, 1))
    z = np.zeros(SHAPE, bool)
    cases = {"hit": (t, t), "missed": (z, t), "negative, fp": (p, z), "negative, empty": (z, z)}
    want = {"hit": (True, True), "missed": (True, False), "negative, fp": (False, True),
            "negative, empty": (False, False)}
    for name, (pred, truth) in cases.items():
        r = M.evaluate_case(pred, truth, SP)
        assert (r["truth_present"], r["pred_present"]) == want[name], name
        assert r["truth_present"] is not r["truth_empty"] and r["pred_present"] is not r["pred_empty"]
        assert math.isnan(r["presence_prob"])  # no probability given: NaN, behaviour otherwise unchanged
    r = M.evaluate_case(p, z, SP)
    assert math.isnan(r["detected"]) and r["n_fp_components"] == 2  # negative patient: FP counted


def test_presence_prob_argument():
    t = _cube((2, 2, 2), (4, 4, 3))
    assert M.evaluate_case(t, t, SP, presence_prob=0.25)["presence_prob"] == 0.25
    assert M.evaluate_case(t, t, SP, presence_prob=np.float32(1.0))["presence_prob"] == 1.0
    without = M.evaluate_case(t, t, SP)
    with_p = M.evaluate_case(t, t, SP, presence_prob=0.0)
    assert {k: v for k, v in with_p.items() if k != "presence_prob"} == \
        {k: v for k, v in without.items() if k != "presence_prob"}
    for bad in (1.5, -0.1, math.nan, "high"):
        with pytest.raises(ValueError, match="presence_prob"):
            M.evaluate_case(t, t, SP, presence_prob=bad)
