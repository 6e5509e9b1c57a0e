"""Paired comparison of two experiments on the same patients: A - B with intervals and a paired test.

Both experiments' rows are matched on (center, subject, sequence_set); a row predicted by one
experiment only is left out (``n_rows`` counts the pairs). For every metric the table gives the mean paired difference with a
percentile bootstrap interval that resamples patients (a patient's sequence subsets move together),
and for each binary outcome (:data:`BINARY_METRICS`: detection, and the patient-level outcomes of
:func:`thrombseg.evaluation.aggregate.patient_outcomes`, e.g. ``patient_specificity`` on the
thrombus-negative patients) an exact paired test:

* one row per patient (one sequence set): exact McNemar, a two-sided binomial test on the
  discordant patients (A detects and B misses, or the reverse; likewise A right and B wrong);
* several rows per patient (pooled sets): exact sign test on each patient's mean difference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from .aggregate import patient_outcomes, summarize

KEYS = ["center", "subject", "sequence_set"]
DEFAULT_METRICS = ("dice", "detected", "n_fp_components")
# 0/1 per row (NaN where not applicable): compared with the exact paired test of detection_test.
BINARY_METRICS = ("detected", "detected_min_overlap", "pred_present", "patient_sensitivity", "patient_specificity")
COLUMNS = ["comparison", "metric", "n_rows", "n_patients", "mean_a", "mean_b", "difference",
           "ci_low", "ci_high", "a_only", "b_only", "p_value", "test"]


def paired_rows(df: pd.DataFrame, a: str, b: str, metrics=DEFAULT_METRICS) -> pd.DataFrame:
    """Rows predicted by both experiments: KEYS, then ``<metric>_a``, ``<metric>_b`` per metric
    (a metric may be a patient-level outcome of :func:`~thrombseg.evaluation.aggregate.patient_outcomes`)."""
    df = patient_outcomes(df)
    cols = [*KEYS, *metrics]
    left = df.loc[df["experiment"] == a, cols]
    right = df.loc[df["experiment"] == b, cols]
    if left.empty or right.empty:
        missing = [e for e, part in ((a, left), (b, right)) if part.empty]
        raise ValueError(f"no rows for experiment(s) {missing} (have {sorted(df['experiment'].unique())})")
    return left.merge(right, on=KEYS, suffixes=("_a", "_b"), validate="one_to_one")


def detection_test(hit_a: np.ndarray, hit_b: np.ndarray, patients: np.ndarray) -> tuple[int, int, float, str]:
    """(A-only count, B-only count, two-sided p, test name) for a paired binary outcome such as
    detection or specificity (1 = the outcome: a hit, a right "no thrombus"; NaN rows dropped)."""
    ok = ~(np.isnan(hit_a) | np.isnan(hit_b))
    hit_a, hit_b, patients = hit_a[ok], hit_b[ok], patients[ok]
    if len(np.unique(patients)) == len(patients):
        a_only, b_only, test = int(((hit_a > 0) & (hit_b == 0)).sum()), int(((hit_b > 0) & (hit_a == 0)).sum()), "exact McNemar"
    else:
        diff = pd.Series(hit_a - hit_b).groupby(patients).mean()
        a_only, b_only, test = int((diff > 0).sum()), int((diff < 0).sum()), "exact sign test (per patient)"
    n = a_only + b_only
    p = binomtest(a_only, n, 0.5).pvalue if n else 1.0
    return a_only, b_only, float(p), test


def compare(df: pd.DataFrame, a: str, b: str, metrics=DEFAULT_METRICS, *, n_boot: int = 2000,
            seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """One row per metric: means of A and B, mean(A - B) and its interval, the exact paired test
    for :data:`BINARY_METRICS`."""
    pairs = paired_rows(df, a, b, metrics)
    diffs = pairs[KEYS].assign(experiment=f"{a} - {b}")
    for m in metrics:
        diffs[m] = pairs[f"{m}_a"].astype(float) - pairs[f"{m}_b"].astype(float)
    summary = summarize(diffs, ["experiment"], list(metrics), n_boot=n_boot, ci=ci, seed=seed)
    patients = (pairs["center"].astype(str) + "/" + pairs["subject"].astype(str)).to_numpy()
    rows = []
    for m, s in zip(metrics, summary.itertuples()):
        va, vb = pairs[f"{m}_a"].astype(float), pairs[f"{m}_b"].astype(float)
        test = (detection_test(va.to_numpy(), vb.to_numpy(), patients) if m in BINARY_METRICS
                else (np.nan, np.nan, np.nan, ""))
        rows.append((f"{a} - {b}", m, s.n, s.n_subjects, va.mean(), vb.mean(), s.mean, s.ci_low, s.ci_high, *test))
    return pd.DataFrame(rows, columns=COLUMNS)


def compare_by(df: pd.DataFrame, a: str, b: str, by: str | None, metrics=DEFAULT_METRICS, **kwargs) -> pd.DataFrame:
    """:func:`compare` overall (``by=None``) or within each value of ``by`` (center, sequence_set)."""
    if by is None:
        return compare(df, a, b, metrics, **kwargs).assign(group="all")
    parts = [compare(g, a, b, metrics, **kwargs).assign(group=str(k)) for k, g in df.groupby(by, sort=True)]
    return pd.concat(parts, ignore_index=True)
