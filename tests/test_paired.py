"""Paired comparison of experiments: differences, patient-level bootstrap intervals, exact tests."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thrombseg.evaluation.paired import compare, compare_by, detection_test


def _table(dice_a, dice_b, hit_a, hit_b, sets=("all",)) -> pd.DataFrame:
    rows = []
    for i, (da, db, ha, hb) in enumerate(zip(dice_a, dice_b, hit_a, hit_b)):
        for s in sets:
            center = "ctrA" if i % 2 else "ctrB"
            rows.append({"subject": f"p{i}", "center": center, "experiment": "A", "sequence_set": s,
                         "dice": da, "detected": ha, "n_fp_components": 1})
            rows.append({"subject": f"p{i}", "center": center, "experiment": "B", "sequence_set": s,
                         "dice": db, "detected": hb, "n_fp_components": 2})
    return pd.DataFrame(rows)


def test_mcnemar_on_discordant_patients():
    # 12 patients: A detects 10, B detects 2 of those 10 -> 8 discordant, all in A's favour
    hit_a = [1.0] * 10 + [0.0] * 2
    hit_b = [1.0] * 2 + [0.0] * 10
    df = _table([0.5] * 12, [0.3] * 12, hit_a, hit_b)
    row = compare(df, "A", "B", n_boot=500).set_index("metric")
    det = row.loc["detected"]
    assert (det.a_only, det.b_only, det.test) == (8, 0, "exact McNemar")
    assert det.p_value == pytest.approx(2 * 0.5**8)
    assert det.difference == pytest.approx(8 / 12)
    dice = row.loc["dice"]
    assert dice.difference == pytest.approx(0.2) and dice.ci_low == pytest.approx(0.2) and dice.ci_high == pytest.approx(0.2)
    assert row.loc["n_fp_components"].difference == -1 and row.loc["dice"].n_patients == 12


def test_interval_covers_zero_when_there_is_no_difference():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 48)
    b = a + rng.normal(0, 0.1, 48)
    res = compare(_table(a, b, [1.0] * 48, [1.0] * 48), "A", "B").set_index("metric")
    assert res.loc["dice"].ci_low < 0 < res.loc["dice"].ci_high
    assert res.loc["detected"].p_value == 1.0 and res.loc["detected"].a_only == 0


def test_pooled_sets_use_a_sign_test_per_patient():
    df = _table([0.5] * 6, [0.5] * 6, [1.0] * 6, [0.0] * 6, sets=("swi", "dwi", "swi+dwi"))
    row = compare(df, "A", "B").set_index("metric").loc["detected"]
    assert row.test.startswith("exact sign test") and (row.a_only, row.b_only) == (6, 0)
    assert row.n_rows == 18 and row.n_patients == 6
    by_set = compare_by(df, "A", "B", "sequence_set")
    assert sorted(by_set.group.unique()) == ["dwi", "swi", "swi+dwi"]
    assert (by_set[by_set.metric == "detected"].test == "exact McNemar").all()


def test_nan_detection_rows_are_left_out_and_missing_experiment_is_named():
    a_only, b_only, p, _ = detection_test(np.array([1.0, np.nan, 0.0]), np.array([0.0, 1.0, 0.0]),
                                          np.array(["x", "y", "z"]))
    assert (a_only, b_only) == (1, 0) and p == 1.0
    with pytest.raises(ValueError, match="'C'"):
        compare(_table([0.1], [0.2], [1.0], [1.0]), "A", "C")


def test_specificity_uses_the_same_exact_test_on_negative_patients():
    # 10 negative patients: A answers "no thrombus" for 8, B for 2 of those 8 -> 6 discordant for A;
    # 4 positive patients (both predict present) have no specificity and are left out.
    rows = []
    for i in range(14):
        negative = i < 10
        for exp, right in (("A", i < 8), ("B", i < 2)):
            rows.append({"subject": f"p{i}", "center": "c", "experiment": exp, "sequence_set": "all",
                         "truth_present": not negative, "pred_present": (not right) if negative else True,
                         "n_fp_components": 0 if (negative and right) else 1})
    res = compare(pd.DataFrame(rows), "A", "B", ("patient_specificity", "pred_present"), n_boot=300)
    spec = res.set_index("metric").loc["patient_specificity"]
    assert (spec.a_only, spec.b_only, spec.test) == (6, 0, "exact McNemar")
    assert spec.p_value == pytest.approx(2 * 0.5**6) and spec.n_rows == 10
    assert spec.mean_a == pytest.approx(0.8) and spec.mean_b == pytest.approx(0.2)
    assert spec.difference == pytest.approx(0.6)
    present = res.set_index("metric").loc["pred_present"]  # all 14: B predicts present more often
    assert (present.a_only, present.b_only) == (0, 6)
