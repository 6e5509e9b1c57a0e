"""Aggregate per-subject metrics into per-center, per-sequence-set and
per-experiment tables with mean, median and a percentile bootstrap CI.

Input: one row per (experiment, sequence_set, center, subject) with the id
columns ``subject, center, experiment, sequence_set`` and metric columns
(numeric or bool; bools become 0/1 so their mean is a fraction).

Tables are long ("tidy"): one row per group and metric, columns
``<group keys>, metric, n, n_subjects, mean, median, ci_low, ci_high``.

* Groupings: per_center by (experiment, sequence_set, center); per_sequence_set
  by (experiment, sequence_set); per_experiment by experiment, pooled over
  sequence sets and centers. Results of different experiments or sequence sets
  are never mixed in one center row.
* NaN values are left out per metric (``n`` counts the rest). Metrics never
  NaN a missed lesion (see ``metrics``); NaN ``detected`` means "no lesion to
  detect", so the ``detected`` metric is reported as ``detection_rate`` (and
  ``detected_min_overlap`` as ``detection_rate_min_overlap``) over detectable
  cases only.
* The CI is for the mean: percentile bootstrap, ``n_boot`` resamples, seeded
  (each group restarts from ``seed`` so a group's CI does not depend on the
  other groups). Subjects are the resampling unit: when a group holds several
  rows per subject (per_experiment pools sequence sets) the subject's rows are
  resampled together (cluster bootstrap). Resamples in which a metric has no
  non-NaN value are ignored for that metric.

Patient-level outcomes (thrombus-negative patients, an empty prediction = "no
thrombus"), added by :func:`patient_outcomes` when the table has ``truth_present``
and ``pred_present`` (or the older ``truth_empty`` / ``pred_empty``):

* ``patient_sensitivity``: fraction predicted present among rows with a thrombus
  (unlike ``detection_rate`` the prediction need not touch the thrombus);
* ``patient_specificity``: fraction predicted empty among thrombus-negative rows
  (NaN in a group without a negative patient);
* ``n_fp_components_per_negative``: false-positive components per negative row
  (``n_fp_components`` stays the mean over all rows);
* ``presence_auc``: ROC AUC of ``presence_prob`` (of ``pred_present`` when the
  table has no probability; rows without a probability are then left out) against
  ``truth_present``; NaN unless the group holds both classes. Its interval comes
  from the same resamples as the means' (same seed); ``median`` is NaN (a group
  statistic, not a per-patient value).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.io import write_table

__all__ = [
    "ID_COLUMNS",
    "GROUPINGS",
    "PATIENT_METRICS",
    "PRESENCE_AUC",
    "metric_columns",
    "presence_flag",
    "patient_outcomes",
    "default_metrics",
    "summarize",
    "aggregate_tables",
    "write_tables",
]

ID_COLUMNS = ("subject", "center", "experiment", "sequence_set")
GROUPINGS = {
    "per_center": ["experiment", "sequence_set", "center"],
    "per_sequence_set": ["experiment", "sequence_set"],
    "per_experiment": ["experiment"],
}
_RENAME = {"detected": "detection_rate", "detected_min_overlap": "detection_rate_min_overlap"}
_OUT_COLUMNS = ["metric", "n", "n_subjects", "mean", "median", "ci_low", "ci_high"]
# Row-level outcome columns added by patient_outcomes(); the mean of each is the metric.
PATIENT_METRICS = ("patient_sensitivity", "patient_specificity", "n_fp_components_per_negative")
PRESENCE_AUC = "presence_auc"
_AUC_CHUNK = 2048  # positive rows per block of pairwise comparisons: bounds memory to 2048 × negatives
# Text a bool column may hold after a TSV round trip (NaN-mixed bool columns are read as object).
_FLAGS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}


def _validate(df: pd.DataFrame) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ID_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"per-subject table lacks id columns {missing}; has {list(df.columns)}")
    keys = ["experiment", "sequence_set", "center", "subject"]
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        first = df.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(f"{int(dup.sum())} duplicated rows for {keys}, e.g. {first}")


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Numeric and bool columns other than the id columns, in table order."""
    return [
        c
        for c in df.columns
        if c not in ID_COLUMNS
        and (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))
    ]


def _flag(col: pd.Series) -> pd.Series:
    """A bool-like column as 1.0 / 0.0, NaN where it holds neither."""
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        v = col.astype(float)
        return v.where(v.isin([0.0, 1.0]))
    return col.astype("string").str.strip().str.lower().map(_FLAGS).astype(float)


def presence_flag(df: pd.DataFrame, what: str) -> pd.Series | None:
    """``<what>_present`` (``what``: "truth" or "pred") as 1.0 / 0.0 / NaN; None when the table lacks it.

    Read from ``<what>_empty`` in per-subject tables written before ``<what>_present`` existed.
    """
    if f"{what}_present" in df.columns:
        return _flag(df[f"{what}_present"])
    if f"{what}_empty" in df.columns:
        return 1.0 - _flag(df[f"{what}_empty"])
    return None


def _presence_flags(df: pd.DataFrame) -> tuple[pd.Series, pd.Series] | None:
    """(truth present, predicted present), or None when the table lacks either."""
    truth, pred = presence_flag(df, "truth"), presence_flag(df, "pred")
    return None if truth is None or pred is None else (truth, pred)


def patient_outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with the :data:`PATIENT_METRICS` columns (NaN outside their patients).

    Unchanged (a copy) when the table lacks the presence flags (see module docstring).
    """
    out = df.copy()
    flags = _presence_flags(out)
    if flags is None:
        return out
    truth, pred = flags
    out["patient_sensitivity"] = pred.where(truth == 1.0)
    out["patient_specificity"] = (1.0 - pred).where(truth == 0.0)
    if "n_fp_components" in out.columns:
        out["n_fp_components_per_negative"] = out["n_fp_components"].astype(float).where(truth == 0.0)
    return out


def _presence_score(df: pd.DataFrame) -> pd.DataFrame | None:
    """Columns truth, score for the AUC: presence_prob if the table has any, else pred_present."""
    flags = _presence_flags(df)
    if flags is None:
        return None
    truth, pred = flags
    prob = pd.to_numeric(df["presence_prob"], errors="coerce") if "presence_prob" in df.columns else None
    # Decided once per table, so every group of a table reports the AUC of the same score.
    score = prob if prob is not None and prob.notna().any() else pred
    return pd.DataFrame({"truth": truth, "score": score}, index=df.index)


def default_metrics(df: pd.DataFrame) -> list[str]:
    """What :func:`summarize` reports by default: metric columns, patient outcomes, presence AUC."""
    metrics = metric_columns(patient_outcomes(df))
    return metrics + [PRESENCE_AUC] if _presence_flags(df) is not None else metrics


def _cluster_draws(n_clusters: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each cluster is drawn in each resample, shape (n_boot, n_clusters).

    The one source of resamples for every interval of a group (means and AUC alike).
    """
    rng = np.random.default_rng(seed)
    # Multinomial counts = how often each cluster is drawn: memory n_boot×n_clusters.
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)


def _bootstrap_means(values: np.ndarray, codes: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Cluster-bootstrap means, shape (n_boot, n_metrics), NaN-aware; ``codes``: row -> cluster."""
    n_clusters = draws.shape[1]
    finite = ~np.isnan(values)
    sums = np.zeros((n_clusters, values.shape[1]))
    counts = np.zeros((n_clusters, values.shape[1]))
    np.add.at(sums, codes, np.where(finite, values, 0.0))
    np.add.at(counts, codes, finite.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (draws @ sums) / (draws @ counts)


def _bootstrap_auc(truth: np.ndarray, score: np.ndarray, codes: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """AUC in each resample (NaN where a class is not drawn), shape (n_boot,).

    Weighted Mann-Whitney form (ties count 1/2): equal to ``roc_auc_score`` with the
    resample's counts as ``sample_weight`` (tested), summed per pair of clusters first
    so that the resamples cost n_boot × n_clusters², whatever the number of rows.
    """
    n_clusters = draws.shape[1]
    pos, neg = truth == 1.0, truth == 0.0
    sp, cp, sn, cn = score[pos], codes[pos], score[neg], codes[neg]
    to_cluster = np.zeros((sn.size, n_clusters))
    to_cluster[np.arange(sn.size), cn] = 1.0
    wins = np.zeros((n_clusters, n_clusters))  # [c, d]: (positive row of c, negative row of d) pairs won
    for i in range(0, sp.size, _AUC_CHUNK):
        s = sp[i:i + _AUC_CHUNK, None]
        np.add.at(wins, cp[i:i + _AUC_CHUNK], ((s > sn) + 0.5 * (s == sn)) @ to_cluster)
    d = draws.astype(float)
    n_pos, n_neg = np.bincount(cp, minlength=n_clusters), np.bincount(cn, minlength=n_clusters)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((d @ wins) * d).sum(1) / ((d @ n_pos) * (d @ n_neg))


def summarize(
    df: pd.DataFrame,
    by: list[str],
    metrics: list[str] | None = None,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean, median and bootstrap CI of the mean per group and metric.

    Args:
        df: per-subject table (see module docstring).
        by: grouping columns.
        metrics: metric columns, :data:`PATIENT_METRICS` or :data:`PRESENCE_AUC`;
            default :func:`default_metrics`.
        n_boot: bootstrap resamples (≥ 1).
        ci: coverage of the percentile interval, in (0, 1).
        seed: seed of the bootstrap.

    Returns:
        Long table: ``by`` columns, then metric, n, n_subjects, mean, median,
        ci_low, ci_high.
    """
    metrics = _checked_metrics(df, by, metrics, n_boot, ci)
    df = patient_outcomes(df).reset_index(drop=True)  # a unique index: the AUC inputs align on it
    if df.empty or not metrics:
        return pd.DataFrame(columns=[*by, *_OUT_COLUMNS])
    percentiles = [(1.0 - ci) / 2.0 * 100.0, (1.0 + ci) / 2.0 * 100.0]
    presence = _presence_score(df) if PRESENCE_AUC in metrics else None
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        auc_in = None if presence is None else presence.loc[group.index]
        rows += [(*key, *row) for row in _group_rows(group, metrics, int(n_boot), seed, percentiles, auc_in)]
    return pd.DataFrame(rows, columns=[*by, *_OUT_COLUMNS])


def _checked_metrics(df: pd.DataFrame, by: list[str], metrics, n_boot: int, ci: float) -> list[str]:
    """The metric columns to summarize, after checking the table and the bootstrap settings."""
    _validate(df)
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise ValueError(f"grouping columns {missing} not in table")
    known = default_metrics(df)
    metrics = known if metrics is None else list(metrics)
    bad = [m for m in metrics if (m not in df.columns and m not in known) or m in ID_COLUMNS]
    if bad:
        raise ValueError(f"not metric columns of the table: {bad}")
    return metrics


def _group_rows(group: pd.DataFrame, metrics: list[str], n_boot: int, seed: int, percentiles,
                presence: pd.DataFrame | None = None) -> list[tuple]:
    """One group's (metric, n, n_subjects, mean, median, ci_low, ci_high) rows; ``presence``: the
    group's AUC inputs (:func:`_presence_score`), needed when :data:`PRESENCE_AUC` is asked for."""
    means = [m for m in metrics if m != PRESENCE_AUC]
    vals = group[means].astype(float).to_numpy()
    # Center is part of the cluster id: subject ids need only be unique per center.
    clusters = (group["center"].astype(str) + "\x00" + group["subject"].astype(str)).to_numpy()
    codes, uniques = pd.factorize(clusters)
    draws = _cluster_draws(len(uniques), n_boot, seed)
    boot = _bootstrap_means(vals, codes, draws)
    rows = {}
    for j, m in enumerate(means):
        v = vals[:, j]
        ok = ~np.isnan(v)
        b = boot[:, j][~np.isnan(boot[:, j])]
        lo, hi = np.percentile(b, percentiles) if b.size else (np.nan, np.nan)
        rows[m] = (
            _RENAME.get(m, m),
            int(ok.sum()),
            int(pd.unique(clusters[ok]).size),
            float(v[ok].mean()) if ok.any() else np.nan,
            float(np.median(v[ok])) if ok.any() else np.nan,
            float(lo),
            float(hi),
        )
    if PRESENCE_AUC in metrics:
        rows[PRESENCE_AUC] = _auc_row(presence, clusters, codes, draws, percentiles)
    return [rows[m] for m in metrics]


def _auc_row(presence: pd.DataFrame, clusters, codes, draws, percentiles) -> tuple:
    """The presence_auc row of a group: roc_auc_score and its interval over the group's resamples."""
    truth, score = presence["truth"].to_numpy(float), presence["score"].to_numpy(float)
    ok = ~(np.isnan(truth) | np.isnan(score))
    n, n_subjects = int(ok.sum()), int(pd.unique(clusters[ok]).size)
    if np.unique(truth[ok]).size < 2:  # one class only: AUC undefined
        return (PRESENCE_AUC, n, n_subjects, np.nan, np.nan, np.nan, np.nan)
    from sklearn.metrics import roc_auc_score  # here: importing sklearn costs ~1 s, paid only for an AUC

    auc = float(roc_auc_score(truth[ok], score[ok]))
    b = _bootstrap_auc(truth[ok], score[ok], codes[ok], draws)
    b = b[~np.isnan(b)]
    lo, hi = np.percentile(b, percentiles) if b.size else (np.nan, np.nan)
    return (PRESENCE_AUC, n, n_subjects, auc, np.nan, float(lo), float(hi))


def aggregate_tables(
    df: pd.DataFrame,
    metrics: list[str] | None = None,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """The per_center, per_sequence_set and per_experiment tables (see GROUPINGS)."""
    return {
        name: summarize(df, by, metrics, n_boot=n_boot, ci=ci, seed=seed)
        for name, by in GROUPINGS.items()
    }


def write_tables(
    df: pd.DataFrame,
    outdir,
    metrics: list[str] | None = None,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Path]:
    """Write per_subject, per_center, per_sequence_set, per_experiment TSVs.

    Args:
        df: per-subject table (see module docstring).
        outdir: output folder (created), e.g. ``results/metrics``.
        metrics: metric columns to aggregate; default all numeric/bool ones.
        n_boot, ci, seed: bootstrap settings, see :func:`summarize`.

    Returns:
        Mapping table name -> written path.
    """
    tables = aggregate_tables(df, metrics, n_boot=n_boot, ci=ci, seed=seed)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, table in {"per_subject": df, **tables}.items():
        written[name] = write_table(table, outdir / f"{name}.tsv", na_rep="NaN")
    return written
