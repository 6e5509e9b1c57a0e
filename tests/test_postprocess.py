"""Lesion-guided post-processing on small synthetic probability maps."""

from __future__ import annotations

import numpy as np
import pytest

from thrombseg.inference import postprocess_thrombus

SHAPE = (30, 30, 20)
SP = (1.0, 1.0, 1.0)


def _box(prob, lo, hi, value):
    prob[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    return prob


def _prob():
    return np.zeros(SHAPE, np.float32)


def _infarct_near(center):
    m = np.zeros(SHAPE, bool)
    c = center
    m[c[0] - 2 : c[0] + 3, c[1] - 2 : c[1] + 3, c[2] - 2 : c[2] + 3] = True
    return m


OFF = dict(remove_small=False, select_component=False, regrow=False)


def test_all_steps_off_is_plain_threshold():
    p = _box(_prob(), (2, 2, 2), (4, 4, 4), 0.6)
    p[10, 10, 10] = 0.49
    mask, info = postprocess_thrombus(p, SP, **OFF)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, p >= 0.5)
    assert info["selection"] == "disabled" and info["n_components_initial"] == 1


def test_min_size_removal_voxels_and_mm3():
    p = _box(_prob(), (2, 2, 2), (4, 4, 4), 0.9)  # 8 voxels
    _box(p, (10, 10, 10), (13, 13, 13), 0.9)  # 27 voxels
    mask, info = postprocess_thrombus(p, SP, select_component=False, regrow=False)
    assert mask.sum() == 27 and info["n_removed_small"] == 1
    # 8 voxels of 0.5x1x2 mm = 8 mm3, 27 voxels = 27 mm3: a 10 mm3 rule keeps only the large one.
    mask, _ = postprocess_thrombus(
        p, (0.5, 1, 2), min_volume_mm3=10, select_component=False, regrow=False
    )
    assert mask.sum() == 27
    mask, _ = postprocess_thrombus(p, SP, min_size_voxels=5, select_component=False, regrow=False)
    assert mask.sum() == 35


def test_nearest_to_infarct_beats_more_confident():
    p = _box(_prob(), (2, 2, 2), (5, 5, 5), 0.99)  # confident, far from infarct
    _box(p, (20, 20, 10), (23, 23, 13), 0.6)  # weaker, next to infarct
    inf = _infarct_near((25, 25, 12))
    mask, info = postprocess_thrombus(p, SP, inf, min_size_voxels=1, regrow=False)
    assert mask[21, 21, 11] and not mask[3, 3, 3]
    assert info["selection"] == "nearest_infarct" and info["n_kept"] == 1
    d = info["distances_mm"]
    # infarct centre (25, 25, 12); nearest voxel of the kept component (22, 22, 12).
    assert min(d.values()) == pytest.approx(np.sqrt(3**2 + 3**2), abs=1e-6)
    # keep_within_mm large enough also keeps the far component.
    mask, info = postprocess_thrombus(
        p, SP, inf, min_size_voxels=1, regrow=False, keep_within_mm=40.0
    )
    assert mask[21, 21, 11] and mask[3, 3, 3] and info["n_kept"] == 2


def test_proximity_weighs_confidence_mass_against_distance():
    p = _box(_prob(), (20, 20, 10), (22, 22, 12), 0.6)  # 8 voxels touching the infarct: mass 4.8
    _box(p, (8, 8, 8), (13, 13, 13), 0.95)  # 125 confident voxels further upstream: mass 118.75
    inf = _infarct_near((25, 25, 12))
    d_near, d_far = np.sqrt(2 * 4**2 + 1), np.sqrt(2 * 13**2)  # closest voxels (21,21,11), (12,12,12)
    mask, info = postprocess_thrombus(p, SP, inf, min_size_voxels=1, regrow=False)
    assert mask[20, 20, 10] and not mask[10, 10, 10]  # nearest only: the speck
    mask, info = postprocess_thrombus(p, SP, inf, min_size_voxels=1, regrow=False, proximity_mm=20.0)
    assert mask[10, 10, 10] and not mask[20, 20, 10] and info["n_kept"] == 1
    assert info["selection"] == "confident_near_infarct"
    assert sorted(info["scores"].values()) == pytest.approx(
        sorted([4.8 * np.exp(-d_near / 20), 118.75 * np.exp(-d_far / 20)]), rel=1e-5)
    # a short scale makes distance dominate again: exp(-(d_far - d_near) / 2) outweighs the mass ratio
    mask, _ = postprocess_thrombus(p, SP, inf, min_size_voxels=1, regrow=False, proximity_mm=2.0)
    assert mask[20, 20, 10] and not mask[10, 10, 10]
    with pytest.raises(ValueError, match="proximity_mm"):
        postprocess_thrombus(p, SP, inf, proximity_mm=-1.0)


def test_same_side_rule_drops_clots_across_the_midline():
    # midline at x = 14.5; infarct at x = 25 (right of it): the clot feeding it is on that side
    inf = _infarct_near((25, 15, 10))
    p = _box(_prob(), (2, 14, 9), (5, 17, 12), 0.95)  # 27 sure voxels at x = 3, the other hemisphere
    _box(p, (17, 14, 9), (19, 16, 11), 0.7)  # 8 voxels at x = 17.5, same side, further from the infarct
    kw = dict(min_size_voxels=1, regrow=False, proximity_mm=20.0)
    mask, _ = postprocess_thrombus(p, SP, inf, **kw)
    assert mask[3, 15, 10] and not mask[17, 14, 9]  # without the rule the larger mass wins
    mask, info = postprocess_thrombus(p, SP, inf, same_side_mm=10.0, midline=(0, 14.5), **kw)
    assert mask[17, 14, 9] and not mask[3, 15, 10] and info["n_removed_other_side"] == 1
    # without a midline (grid orientation unknown) the rule is off
    mask, info = postprocess_thrombus(p, SP, inf, same_side_mm=10.0, **kw)
    assert mask[3, 15, 10] and "n_removed_other_side" not in info
    # an infarct within the margin of the midline (brainstem, both ACAs) keeps both sides
    mask, info = postprocess_thrombus(p, SP, _infarct_near((20, 15, 10)), same_side_mm=10.0,
                                      midline=(0, 14.5), **kw)
    assert info["n_removed_other_side"] == 0 and mask[3, 15, 10]
    # nothing on the infarct's side: the rule steps aside instead of returning an empty mask
    q = _box(_prob(), (2, 14, 9), (5, 17, 12), 0.95)
    mask, info = postprocess_thrombus(q, SP, inf, same_side_mm=10.0, midline=(0, 14.5), **kw)
    assert mask[3, 15, 10] and "n_removed_other_side" not in info
    with pytest.raises(ValueError, match="same_side_mm"):
        postprocess_thrombus(p, SP, inf, same_side_mm=-1.0, midline=(0, 14.5))


def test_case_midline_from_affine_and_brain_mask():
    from thrombseg.core.case import Case
    from thrombseg.inference.postprocess import case_midline

    brain = np.zeros((10, 40, 30), bool)
    brain[:, 10:31, :] = True  # centred on index 20 of axis 1
    img = {"swi": np.zeros(brain.shape, np.float32)}
    swapped = np.array([[0, -1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # axis 1 runs R-L
    assert case_midline(Case("s", "c", img, brain=brain, affine=swapped)) == (1, pytest.approx(20.0))
    assert case_midline(Case("s", "c", img, affine=np.eye(4))) == (0, 4.5)  # no mask: the middle
    assert case_midline(Case("s", "c", img, brain=brain)) is None  # no affine: the rule is off


def test_selection_ignores_components_removed_as_small():
    p = _box(_prob(), (2, 2, 2), (5, 5, 5), 0.9)  # 27 voxels, far
    p[24, 24, 12] = 0.9  # 1 voxel, closest to the infarct
    inf = _infarct_near((25, 25, 12))
    mask, _ = postprocess_thrombus(p, SP, inf, regrow=False)
    assert mask.sum() == 27 and not mask[24, 24, 12]


@pytest.mark.parametrize("infarct", [None, np.zeros(SHAPE, bool)], ids=["none", "empty"])
def test_without_infarct_keeps_most_confident(infarct):
    p = _box(_prob(), (2, 2, 2), (8, 8, 8), 0.6)  # large, mean 0.6+
    p[4, 4, 4] = 0.97  # max 0.97
    _box(p, (20, 20, 10), (23, 23, 13), 0.9)  # small, uniform 0.9
    mask, info = postprocess_thrombus(p, SP, infarct, min_size_voxels=1, regrow=False)
    assert mask[4, 4, 4] and not mask[21, 21, 11]
    assert info["selection"] == "most_confident_max"
    mask, info = postprocess_thrombus(
        p, SP, infarct, min_size_voxels=1, regrow=False, confidence="mean"
    )
    assert mask[21, 21, 11] and not mask[4, 4, 4]


def test_regrow_adds_touching_low_region_only():
    p = _box(_prob(), (8, 8, 8), (16, 16, 16), 0.35)  # halo around the core
    _box(p, (10, 10, 10), (13, 13, 13), 0.9)  # core, 27 voxels
    _box(p, (20, 20, 2), (24, 24, 6), 0.4)  # low region not touching
    p[16, 16, 16] = 0.35  # diagonal-only contact with the halo: 26-connected
    p[17, 17, 17] = 0.29  # below the regrow threshold
    mask, info = postprocess_thrombus(p, SP)
    assert mask.sum() == 8**3 + 1
    assert info["voxels_added_by_regrow"] == 8**3 + 1 - 27
    assert not mask[21, 21, 3] and not mask[17, 17, 17]
    # regrowth limited to 1 mm around the core: one layer on each of its 6 faces.
    mask, _ = postprocess_thrombus(p, SP, regrow_radius_mm=1.0)
    assert mask.sum() == 27 + 6 * 9


def test_regrow_rounds_out_the_nearest_component_only():
    p = _box(_prob(), (2, 2, 2), (6, 6, 6), 0.9)
    _box(p, (6, 2, 2), (8, 6, 6), 0.4)
    _box(p, (20, 20, 10), (23, 23, 13), 0.9)
    _box(p, (23, 20, 10), (25, 23, 13), 0.4)
    inf = _infarct_near((25, 25, 12))
    mask, _ = postprocess_thrombus(p, SP, inf, min_size_voxels=1)
    assert mask.sum() == 27 + 18 and not mask[3, 3, 3]


def test_empty_prediction():
    mask, info = postprocess_thrombus(_prob(), SP, _infarct_near((10, 10, 10)))
    assert mask.sum() == 0 and info["n_kept"] == 0 and info["selection"] == "none"


def test_validation_errors():
    p = _prob()
    with pytest.raises(ValueError, match=r"\(30, 30, 20\).*\(30, 30, 21\)"):
        postprocess_thrombus(p, SP, np.zeros((30, 30, 21), bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        postprocess_thrombus(p + 2, SP)
    with pytest.raises(ValueError, match="regrow_threshold"):
        postprocess_thrombus(p, SP, threshold=0.5, regrow_threshold=0.6)
    with pytest.raises(ValueError, match="NaN"):
        postprocess_thrombus(np.full(SHAPE, np.nan), SP)
    with pytest.raises(ValueError, match="confidence"):
        postprocess_thrombus(p, SP, confidence="median")
    with pytest.raises(ValueError, match="3 values"):
        postprocess_thrombus(p, (1, 1))
