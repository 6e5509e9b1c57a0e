"""Candidate features, the learned scorer and the score selection, on small synthetic maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thrombseg.core.case import Case
from thrombseg.inference import postprocess_thrombus
from thrombseg.inference.candidates import (
    DISTANCE_CAP_MM,
    FEATURES,
    PRESENCE_THRESHOLD_NO_NEGATIVES,
    candidate_table,
    case_frame,
    check_scorer,
    choose_presence_threshold,
    fit_pipeline,
    fit_scorer,
    out_of_fold_scores,
    score_table,
    scorer_json,
)
from thrombseg.inference.settings import InferenceConfig, InferenceError

SHAPE = (40, 40, 20)
SP = (1.0, 1.0, 2.0)  # anisotropic: features are in mm, not voxels
MIDLINE = (0, 19.5)


def _box(arr, lo, hi, value):
    arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
    return arr


def _planted():
    """A: 2x2x2 cube across the midline from the infarct; B: 10-voxel rod on the infarct's side."""
    prob = np.zeros(SHAPE, np.float32)
    _box(prob, (8, 8, 8), (10, 10, 10), 0.8)
    _box(prob, (25, 20, 10), (35, 21, 11), 0.6)
    prob[25, 20, 10] = 0.9
    infarct = _box(np.zeros(SHAPE, bool), (30, 24, 10), (34, 28, 12), True)  # centre (31.5, 25.5, 10.5) voxels
    return prob, infarct


def _hand_scorer(feature: str, coef: float, intercept: float) -> dict:
    """A scorer of one feature, written by hand: score = sigmoid(coef * feature + intercept)."""
    scorer = {"model": "logistic_regression", "features": [feature], "mean": [0.0], "scale": [1.0],
              "coef": [coef], "intercept": intercept}
    return check_scorer(scorer)


def test_features_of_planted_components():
    prob, infarct = _planted()
    truth = _box(np.zeros(SHAPE, np.uint8), (30, 20, 10), (31, 21, 11), 1)  # one voxel of the rod
    t = candidate_table(prob, SP, infarct, threshold=0.5, min_size_voxels=1, midline=MIDLINE, truth=truth)
    assert list(t.columns[-len(FEATURES) - 1:-1]) == list(FEATURES) and len(t) == 2
    cube, rod = t.set_index("n_voxels").loc[8], t.set_index("n_voxels").loc[10]
    assert cube["volume_mm3"] == 16 and rod["volume_mm3"] == 20  # voxels of 2 mm^3
    assert cube["mass_mm3"] == pytest.approx(12.8) and rod["mass_mm3"] == pytest.approx(12.6)
    assert rod["prob_max"] == pytest.approx(0.9) and rod["prob_mean"] == pytest.approx(0.63)
    assert (cube["mass_rank"], rod["mass_rank"]) == (1, 2)
    assert cube["elongation"] == pytest.approx(2.0) and rod["elongation"] == pytest.approx(10.0)  # 4x2x2 mm; 10x1x2 mm
    # closest voxels to the infarct centre (31.5, 25.5, 21.0) mm: (31, 20, 20) mm and (9, 9, 18) mm
    assert rod["distance_mm"] == pytest.approx(np.sqrt(0.5**2 + 5.5**2 + 1)) and rod["has_infarct"] == 1
    assert cube["distance_mm"] == pytest.approx(np.sqrt(22.5**2 + 16.5**2 + 3**2))
    assert rod["side_mm"] == pytest.approx(10.0) and cube["side_mm"] == pytest.approx(-11.0)  # + = infarct's side
    # position from the array's middle (19.5, 19.5, 9.5) voxels, RAS mm
    assert (cube["lateral_mm"], cube["anterior_mm"], cube["superior_mm"]) == pytest.approx((11, -11, -2))
    assert (rod["lateral_mm"], rod["anterior_mm"], rod["superior_mm"]) == pytest.approx((10, 0.5, 1))
    assert t.set_index("n_voxels")["is_thrombus"].to_dict() == {8: False, 10: True}


def test_features_without_infarct_or_candidates_and_the_size_rule():
    prob, _ = _planted()
    t = candidate_table(prob, SP, None, threshold=0.5, min_size_voxels=1, midline=MIDLINE)
    assert (t["distance_mm"] == DISTANCE_CAP_MM).all() and (t["has_infarct"] == 0).all() and (t["side_mm"] == 0).all()
    assert candidate_table(prob, SP, threshold=0.5, min_volume_mm3=18)["n_voxels"].tolist() == [10]  # 16 mm^3 < 18
    empty = candidate_table(np.zeros(SHAPE, np.float32), SP)
    assert empty.empty and list(empty.columns[-len(FEATURES):]) == list(FEATURES)
    with pytest.raises(ValueError, match="truth"):
        candidate_table(prob, SP, truth=np.zeros((3, 3, 3), bool))


def test_case_frame_places_candidates_in_the_head():
    brain = _box(np.zeros(SHAPE, bool), (10, 10, 4), (31, 31, 17), True)  # centroid (20, 20, 10) voxels
    affine = np.diag([1.0, -1.0, 2.0, 1.0])  # array axis 1 runs posterior
    frame = case_frame(Case("s", "c", {"swi": np.zeros(SHAPE, np.float32)}, brain=brain, spacing=SP, affine=affine))
    np.testing.assert_allclose(frame.centre, (20, 20, 10))
    prob, _ = _planted()
    rod = candidate_table(prob, SP, min_size_voxels=1, frame=frame).set_index("n_voxels").loc[10]
    assert (rod["anterior_mm"], rod["superior_mm"]) == pytest.approx((0.0, 0.0))  # y 20 -> 0; z 10 -> 0
    cube = candidate_table(prob, SP, min_size_voxels=1, frame=frame).set_index("n_voxels").loc[8]
    assert cube["anterior_mm"] == pytest.approx(11.5)  # 11.5 voxels before the centre on an axis running posterior


def _patient(rng, positive=True):
    """A map with an infarct, 6 false blobs anywhere, and (``positive``) a confident rod beside the infarct."""
    prob = np.zeros(SHAPE, np.float32)
    truth = np.zeros(SHAPE, np.uint8)
    x = int(rng.integers(26, 31))
    infarct = _box(np.zeros(SHAPE, bool), (x, 26, 8), (x + 5, 31, 12), True)
    if positive:
        _box(truth, (x, 18, 9), (x + 1, 25, 10), 1)  # a 7-voxel rod along y, ending next to the infarct
        prob[truth > 0] = rng.uniform(0.8, 0.95)
    occupied = np.zeros(SHAPE, bool)
    occupied[max(x - 3, 0):x + 8, 15:34, 5:15] = True  # keep the blobs apart from the rod and the infarct
    placed = 0
    while placed < 6:
        lo = rng.integers((1, 1, 1), (36, 36, 16))
        size = int(rng.integers(2, 4))
        if occupied[lo[0] - 1:lo[0] + size + 1, lo[1] - 1:lo[1] + size + 1, lo[2] - 1:lo[2] + size + 1].any():
            continue
        _box(prob, lo, lo + size, rng.uniform(0.5, 0.8))
        occupied[lo[0] - 1:lo[0] + size + 1, lo[1] - 1:lo[1] + size + 1, lo[2] - 1:lo[2] + size + 1] = True
        placed += 1
    return prob, infarct, truth


def _tables(seed, n, positive=True):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prob, infarct, truth = _patient(rng, positive)
        out.append(candidate_table(prob, SP, infarct, min_size_voxels=1, midline=MIDLINE, truth=truth)
                   .assign(subject=f"p{seed}_{i}"))
    return out


def test_a_scorer_fitted_on_planted_candidates_ranks_the_true_one_first():
    import pandas as pd

    train = pd.concat(_tables(0, 8), ignore_index=True)
    assert train["is_thrombus"].sum() == 8 and len(train) == 56
    scorer = fit_scorer(train, train["is_thrombus"])
    assert scorer["features"] == list(FEATURES) and scorer["sklearn_version"]
    for table in _tables(1, 4):  # new patients
        assert table.loc[np.argmax(score_table(table, scorer)), "is_thrombus"]


def test_the_json_scorer_equals_sklearns_predict_proba():
    import pandas as pd

    table = pd.concat(_tables(2, 6), ignore_index=True)
    pipeline = fit_pipeline(table, table["is_thrombus"])
    scorer = json.loads(json.dumps(scorer_json(pipeline)))  # plain JSON and back
    np.testing.assert_allclose(score_table(table, scorer),
                               pipeline.predict_proba(table[list(FEATURES)].to_numpy(float))[:, 1], rtol=1e-12, atol=0)
    with pytest.raises(InferenceError, match="both kinds"):
        fit_pipeline(table, np.zeros(len(table), bool))


def test_out_of_fold_scores_leave_each_patient_out_of_its_own_scorer():
    import pandas as pd

    table = pd.concat(_tables(3, 4), ignore_index=True)
    y = table["is_thrombus"].to_numpy(bool)
    scores, how = out_of_fold_scores(table, y, table["subject"], n_folds=4)
    assert how == "out-of-fold: 4 folds by patient"
    held_out = table["subject"] == "p3_0"
    alone = score_table(table[held_out], fit_scorer(table[~held_out], y[~held_out]))
    np.testing.assert_allclose(scores[held_out.to_numpy()], alone)
    _, how = out_of_fold_scores(table[held_out], y[held_out.to_numpy()], table["subject"][held_out])
    assert how.startswith("in-sample")


def test_presence_threshold_maximizes_youden_j_or_keeps_every_candidate():
    presence = [0.9, 0.7, 0.4, 0.5, 0.2]
    truth = [True, True, True, False, False]
    choice = choose_presence_threshold(presence, truth)
    assert choice["threshold"] == pytest.approx(0.6) and choice["youden_j"] == pytest.approx(2 / 3)  # 0.7, down to 0.5
    assert (choice["sensitivity"], choice["specificity"]) == pytest.approx((2 / 3, 1.0))
    tie = choose_presence_threshold([0.9, 0.4, 0.6, 0.3], [True, True, False, False])
    assert tie["threshold"] == pytest.approx(0.35) and tie["youden_j"] == 0.5  # 0.4 ties 0.9: the lower, then down
    alone = choose_presence_threshold([0.9, 0.2], [True, True])
    assert alone["threshold"] == PRESENCE_THRESHOLD_NO_NEGATIVES and "no thrombus-negative" in alone["rule"]
    # pseudo-negatives (positives without their thrombus) count as negatives: 0.3 and 0.5 below 0.6
    pseudo = choose_presence_threshold([0.9, 0.7, 0.2], [True, True, True], [0.3, 0.5])
    assert pseudo["threshold"] == pytest.approx(0.6) and (pseudo["sensitivity"], pseudo["specificity"]) == (2 / 3, 1.0)
    assert "3 positive, 0 negative and 2 pseudo-negative" in pseudo["rule"]
    both = choose_presence_threshold([0.9, 0.7, 0.8], [True, True, False], [0.3])  # the negative at 0.8 costs one
    assert both["threshold"] == pytest.approx(0.5) and both["specificity"] == 0.5


def test_score_selection_keeps_the_best_candidate_or_answers_no_thrombus():
    prob, infarct = _planted()
    kw = dict(min_size_voxels=1, regrow=False, midline=MIDLINE)
    by_volume = _hand_scorer("log_volume_mm3", 1.0, -3.0)  # the larger (rod, 20 mm^3) wins
    mask, info = postprocess_thrombus(prob, SP, infarct, selection="score", scorer=by_volume,
                                      presence_threshold=0.0, **kw)
    assert mask[30, 20, 10] and not mask[8, 8, 8] and mask.sum() == 10 and info["thrombus_present"]
    assert info["selection"] == "score" and info["presence_prob"] == pytest.approx(1 / (1 + np.exp(3 - np.log(20))))
    t = candidate_table(prob, SP, infarct, min_size_voxels=1, midline=MIDLINE)
    assert info["scores"] == pytest.approx(dict(zip(t["label"], score_table(t, by_volume))))  # one feature code path
    unsure = _hand_scorer("prob_max", 1.0, -10.0)  # every score about 1e-4
    mask, info = postprocess_thrombus(prob, SP, infarct, selection="score", scorer=unsure, presence_threshold=0.5, **kw)
    assert mask.sum() == 0 and not info["thrombus_present"] and info["n_kept"] == 0
    assert info["presence_prob"] == pytest.approx(1 / (1 + np.exp(10 - 0.9))) and info["presence_prob"] < 0.5
    mask, info = postprocess_thrombus(np.zeros(SHAPE, np.float32), SP, infarct, selection="score", scorer=unsure)
    assert mask.sum() == 0 and info["presence_prob"] == 0.0  # no candidate: presence 0


def test_rule_selection_ignores_the_scorer():
    prob, infarct = _planted()
    kw = dict(min_size_voxels=1, midline=MIDLINE, same_side_mm=5.0)
    mask, info = postprocess_thrombus(prob, SP, infarct, **kw)
    same_mask, same_info = postprocess_thrombus(prob, SP, infarct, selection="rule", presence_threshold=1.0,
                                                scorer=_hand_scorer("prob_max", 1.0, -10.0), **kw)
    np.testing.assert_array_equal(mask, same_mask)
    assert info == same_info and "presence_prob" not in info


def test_selection_settings_are_checked():
    prob, infarct = _planted()
    with pytest.raises(ValueError, match="selection must be one of"):
        postprocess_thrombus(prob, SP, selection="best")
    with pytest.raises(InferenceError, match="candidate scorer"):
        postprocess_thrombus(prob, SP, selection="score")
    with pytest.raises(ValueError, match="presence_threshold"):
        postprocess_thrombus(prob, SP, presence_threshold=1.5)
    with pytest.raises(InferenceError, match="coef must hold 1 finite numbers"):
        check_scorer(_hand_scorer("prob_max", 1.0, 0.0) | {"coef": [float("nan")]})
    with pytest.raises(InferenceError, match="features must be a list of"):
        check_scorer(_hand_scorer("prob_max", 1.0, 0.0) | {"features": ["age"]})
    with pytest.raises(InferenceError, match="needs the candidate scorer"):
        InferenceConfig(selection="score")
    with pytest.raises(InferenceError, match="presence_threshold must be a number in"):
        InferenceConfig(presence_threshold=-0.1)
    assert InferenceConfig(selection="score", scorer=_hand_scorer("prob_max", 1.0, 0.0)).presence_threshold == 0.5
