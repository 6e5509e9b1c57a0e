"""Aggregation tables: point estimates, bootstrap CI, groupings, atomic writes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from thrombseg.evaluation import aggregate as A


def _table(seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for exp in ("base", "gmd"):
        for seqs in ("dwi+adc", "dwi"):
            for center in ("c1", "c2"):
                for s in range(12):
                    truth_empty = s == 0  # one lesion-free subject per center
                    rows.append(
                        {
                            "subject": f"sub-{s:02d}",
                            "center": center,
                            "experiment": exp,
                            "sequence_set": seqs,
                            "dice": rng.uniform(0, 1),
                            "hd95_mm": rng.gamma(2.0, 3.0),
                            "detected": math.nan if truth_empty else float(rng.uniform() < 0.8),
                            "hd95_penalized": bool(rng.uniform() < 0.1),
                            "note": "text column is ignored",
                        }
                    )
    return pd.DataFrame(rows)


def test_point_estimates_match_pandas_and_groupings():
    df = _table()
    tabs = A.aggregate_tables(df, n_boot=200)
    pc = tabs["per_center"].set_index(["experiment", "sequence_set", "center", "metric"])
    ref = df.groupby(["experiment", "sequence_set", "center"])["dice"].agg(["mean", "median"])
    for key, r in ref.iterrows():
        row = pc.loc[(*key, "dice")]
        assert row["mean"] == pytest.approx(r["mean"], abs=1e-12)
        assert row["median"] == pytest.approx(r["median"], abs=1e-12)
        assert row["n"] == 12 and row["n_subjects"] == 12
    assert set(tabs["per_sequence_set"]["metric"]) == {
        "dice", "hd95_mm", "detection_rate", "hd95_penalized"
    }
    pe = tabs["per_experiment"].set_index(["experiment", "metric"])
    # per_experiment pools both sequence sets: 48 rows, 24 subjects (center+subject).
    assert pe.loc[("gmd", "dice"), "n"] == 48 and pe.loc[("gmd", "dice"), "n_subjects"] == 24


def test_detection_rate_excludes_not_applicable_cases():
    df = _table()
    ps = A.summarize(df, ["experiment", "sequence_set"], ["detected"], n_boot=500)
    g = df[(df.experiment == "base") & (df.sequence_set == "dwi")]["detected"].dropna()
    row = ps[(ps.experiment == "base") & (ps.sequence_set == "dwi")].iloc[0]
    assert row["metric"] == "detection_rate" and row["n"] == 22
    assert row["mean"] == pytest.approx(g.mean())
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]


def test_bootstrap_ci_seeded_configurable_and_plausible():
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame(
        {
            "subject": [f"s{i}" for i in range(n)],
            "center": "c",
            "experiment": "e",
            "sequence_set": "all",
            "x": rng.normal(5.0, 2.0, n),
        }
    )
    a = A.summarize(df, ["experiment"], n_boot=4000, seed=3)
    b = A.summarize(df, ["experiment"], n_boot=4000, seed=3)
    c = A.summarize(df, ["experiment"], n_boot=4000, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert a["ci_low"].iloc[0] != c["ci_low"].iloc[0]
    # Independent check: percentile bootstrap ≈ normal interval for a large sample.
    se = df["x"].std(ddof=0) / math.sqrt(n)
    assert a["ci_low"].iloc[0] == pytest.approx(df["x"].mean() - 1.96 * se, abs=0.1 * se * 1.96)
    assert a["ci_high"].iloc[0] == pytest.approx(df["x"].mean() + 1.96 * se, abs=0.1 * se * 1.96)
    # narrower interval for lower coverage
    d = A.summarize(df, ["experiment"], n_boot=4000, seed=3, ci=0.5)
    assert d["ci_high"].iloc[0] - d["ci_low"].iloc[0] < a["ci_high"].iloc[0] - a["ci_low"].iloc[0]


def test_cluster_bootstrap_matches_explicit_resampling():
    # Two rows per subject; the CI must come from resampling subjects.
    df = pd.DataFrame(
        {
            "subject": ["a", "a", "b", "b", "c", "c"],
            "center": "c1",
            "experiment": "e",
            "sequence_set": ["s1", "s2"] * 3,
            "x": [0.0, 0.0, 1.0, 1.0, 5.0, np.nan],
        }
    )
    # Exact bootstrap distribution: the 27 equally likely draws of 3 subjects.
    sums, counts = {"a": 0.0, "b": 2.0, "c": 5.0}, {"a": 2, "b": 2, "c": 1}
    means = np.sort(
        [
            sum(sums[k] for k in draw) / sum(counts[k] for k in draw)
            for draw in itertools.product("abc", repeat=3)
        ]
    )
    cdf = np.arange(1, 28) / 27

    def quantile(q):  # inverse CDF; the chosen q lie away from its jumps
        return means[np.searchsorted(cdf, q)]

    for ci in (0.95, 0.6):
        out = A.summarize(df, ["experiment"], n_boot=20000, seed=0, ci=ci).iloc[0]
        assert out["n"] == 5 and out["n_subjects"] == 3
        assert out["ci_low"] == pytest.approx(quantile((1 - ci) / 2), abs=1e-9)
        assert out["ci_high"] == pytest.approx(quantile((1 + ci) / 2), abs=1e-9)
    assert out["mean"] == pytest.approx(7.0 / 5.0)


def test_single_subject_and_all_nan():
    df = pd.DataFrame(
        {"subject": ["a"], "center": ["c"], "experiment": ["e"], "sequence_set": ["s"],
         "x": [0.7], "detected": [np.nan]}
    )
    out = A.summarize(df, ["experiment"], n_boot=50).set_index("metric")
    assert out.loc["x", "ci_low"] == out.loc["x", "ci_high"] == pytest.approx(0.7)
    assert out.loc["detection_rate", "n"] == 0
    assert np.isnan(out.loc["detection_rate", ["mean", "median", "ci_low", "ci_high"]]).all()


def test_validation():
    df = _table()
    with pytest.raises(ValueError, match="center"):
        A.summarize(df.drop(columns="center"), ["experiment"])
    with pytest.raises(ValueError, match="duplicated"):
        A.summarize(pd.concat([df, df.iloc[:1]]), ["experiment"])
    with pytest.raises(ValueError, match="n_boot"):
        A.summarize(df, ["experiment"], n_boot=0)
    with pytest.raises(ValueError, match="metric"):
        A.summarize(df, ["experiment"], ["subject"])


def test_write_tables_atomic_roundtrip(tmp_path):
    df = _table()
    out = tmp_path / "results" / "metrics"
    paths = A.write_tables(df, out, n_boot=100, seed=7)
    assert sorted(p.name for p in out.iterdir()) == [
        "per_center.tsv", "per_experiment.tsv", "per_sequence_set.tsv", "per_subject.tsv"
    ]  # no temp files left behind
    back = pd.read_csv(paths["per_subject"], sep="\t")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    pc = pd.read_csv(paths["per_center"], sep="\t")
    assert len(pc) == 2 * 2 * 2 * 4  # experiments x sequence sets x centers x metrics
    expected = A.aggregate_tables(df, n_boot=100, seed=7)["per_center"]
    np.testing.assert_allclose(pc["ci_high"], expected["ci_high"], rtol=1e-12)
    # Rewriting replaces files in place.
    A.write_tables(df.iloc[:10], out, n_boot=10)
    assert len(pd.read_csv(paths["per_subject"], sep="\t")) == 10


# ---------------------------------------------------------------- patient-level outcomes
SHAPE = (12, 12, 12)
SP = (1.0, 1.0, 1.0)


def _box(*corners):
    """A mask holding the given boxes ((lo, hi) per box, voxel corners)."""
    m = np.zeros(SHAPE, bool)
    for lo, hi in corners:
        m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


THROMBUS = ((2, 2, 2), (4, 4, 4))
FAR = ((8, 8, 8), (10, 10, 10))
FAR2 = ((0, 9, 0), (1, 10, 1))
# subject: (truth boxes, predicted boxes, presence probability)
COHORT = {
    "p1": ([THROMBUS], [THROMBUS], 0.9),          # detected
    "p2": ([THROMBUS], [THROMBUS, FAR], 0.8),     # detected, one false-positive component
    "p3": ([THROMBUS], [FAR], 0.4),               # something predicted, but elsewhere: present, not detected
    "p4": ([THROMBUS], [], 0.3),                  # missed: predicted "no thrombus"
    "n1": ([], [FAR, FAR2], 0.6),                 # negative patient, two planted false positives
    "n2": ([], [], 0.1),                          # negative patient, rightly "no thrombus"
}


def _cohort(with_prob=True, center=lambda s: "c1"):
    from thrombseg.evaluation.metrics import evaluate_case

    rows = []
    for sub, (truth, pred, prob) in COHORT.items():
        row = evaluate_case(_box(*pred), _box(*truth), SP, presence_prob=prob if with_prob else None)
        rows.append({"subject": sub, "center": center(sub), "experiment": "e", "sequence_set": "all", **row})
    return pd.DataFrame(rows)


def test_patient_level_known_answers():
    out = A.summarize(_cohort(with_prob=False), ["experiment"], n_boot=500).set_index("metric")
    assert out.loc["patient_sensitivity", "mean"] == pytest.approx(0.75) and out.loc["patient_sensitivity", "n"] == 4
    assert out.loc["patient_specificity", "mean"] == pytest.approx(0.5) and out.loc["patient_specificity", "n"] == 2
    assert out.loc["n_fp_components_per_negative", "mean"] == pytest.approx((2 + 0) / 2)
    assert out.loc["n_fp_components", "mean"] == pytest.approx((0 + 1 + 1 + 0 + 2 + 0) / 6)  # per patient
    assert out.loc["detection_rate", "mean"] == pytest.approx(2 / 4)  # p3's prediction misses the thrombus
    # Dice, HD95 and lesion F1 are means over the 4 thrombus-positive patients, as detection is
    positives = _cohort(with_prob=False).iloc[:4]
    for m in ("dice", "hd95_mm", "lesion_f1"):
        assert out.loc[m, "n"] == 4 and out.loc[m, "mean"] == pytest.approx(positives[m].mean()), m
    # no probability: AUC of the binary answer = (sensitivity + specificity) / 2
    assert out.loc["presence_auc", "mean"] == pytest.approx((0.75 + 0.5) / 2)
    assert out.loc["presence_auc", "n"] == 6 and np.isnan(out.loc["presence_auc", "median"])
    for m in ("patient_sensitivity", "patient_specificity", "n_fp_components_per_negative", "presence_auc"):
        row = out.loc[m]
        assert row["ci_low"] <= row["mean"] <= row["ci_high"], m
    # with a probability: 6 of the 8 (thrombus, no thrombus) pairs are ranked right
    prob = A.summarize(_cohort(), ["experiment"], [A.PRESENCE_AUC, "presence_prob"], n_boot=200).set_index("metric")
    assert prob.loc["presence_auc", "mean"] == pytest.approx(6 / 8)
    from sklearn.metrics import roc_auc_score

    assert prob.loc["presence_auc", "mean"] == pytest.approx(
        roc_auc_score([1, 1, 1, 1, 0, 0], [0.9, 0.8, 0.4, 0.3, 0.6, 0.1]))


def test_auc_interval_uses_the_means_resamples():
    from sklearn.metrics import roc_auc_score

    df = _cohort()
    seed, n_boot = 5, 300
    got = A.summarize(df, ["experiment"], [A.PRESENCE_AUC], n_boot=n_boot, seed=seed).iloc[0]
    draws = A._cluster_draws(len(df), n_boot, seed)  # one row per subject: clusters in table order
    y = df["truth_present"].astype(int).to_numpy()
    aucs = [roc_auc_score(y, df["presence_prob"], sample_weight=w) for w in draws
            if (w[y == 1].sum() > 0) and (w[y == 0].sum() > 0)]
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))


def test_bootstrap_auc_equals_weighted_roc_auc_score(monkeypatch):
    from sklearn.metrics import roc_auc_score

    monkeypatch.setattr(A, "_AUC_CHUNK", 7)  # several blocks of positive rows
    rng = np.random.default_rng(0)
    truth = (rng.uniform(size=40) < 0.6).astype(float)
    score = np.round(rng.uniform(size=40), 1)  # ties on purpose
    codes = np.repeat(np.arange(20), 2)  # two rows per patient
    draws = A._cluster_draws(20, 50, 1)
    got = A._bootstrap_auc(truth, score, codes, draws)
    for b, w in enumerate(draws):
        rw = w[codes]
        if rw[truth == 1].sum() and rw[truth == 0].sum():
            assert got[b] == pytest.approx(roc_auc_score(truth, score, sample_weight=rw), abs=1e-12)
        else:
            assert np.isnan(got[b])


def test_group_without_negatives_gives_nan_specificity():
    df = _cohort(center=lambda s: "neg_and_pos" if s in ("p1", "n1", "n2") else "pos_only")
    pc = A.aggregate_tables(df, n_boot=100)["per_center"].set_index(["center", "metric"])
    assert pc.loc[("pos_only", "patient_sensitivity"), "mean"] == pytest.approx(2 / 3)  # p2, p3 of p2-p4
    for m in ("patient_specificity", "n_fp_components_per_negative", "presence_auc"):
        row = pc.loc[("pos_only", m)]
        assert row["n"] == (3 if m == "presence_auc" else 0)
        assert np.isnan(row[["mean", "ci_low", "ci_high"]].astype(float)).all(), m
    assert pc.loc[("neg_and_pos", "patient_specificity"), "mean"] == pytest.approx(0.5)


def test_presence_outcomes_from_older_tables_and_tsv_roundtrip(tmp_path):
    df = _cohort()
    new = A.summarize(df, ["experiment"], n_boot=100, seed=2).set_index("metric")
    old = A.summarize(df.drop(columns=["truth_present", "pred_present"]), ["experiment"], n_boot=100, seed=2)
    old = old.set_index("metric")
    for m in (*A.PATIENT_METRICS, A.PRESENCE_AUC):
        pd.testing.assert_series_equal(new.loc[m], old.loc[m])
    # read back from TSV (bools as text) the numbers are the same
    paths = A.write_tables(df, tmp_path, n_boot=100, seed=2)
    back = A.summarize(pd.read_csv(paths["per_subject"], sep="\t"), ["experiment"], n_boot=100, seed=2)
    pd.testing.assert_frame_equal(back.set_index("metric").loc[list(new.index)], new)


def test_tables_without_presence_columns_are_unchanged():
    df = _table()
    assert "patient_sensitivity" not in set(A.aggregate_tables(df, n_boot=50)["per_experiment"]["metric"])
    assert A.default_metrics(df) == A.metric_columns(df)
    with pytest.raises(ValueError, match="presence_auc"):
        A.summarize(df, ["experiment"], [A.PRESENCE_AUC])
