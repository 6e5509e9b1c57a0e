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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.io import write_table

__all__ = [
    "ID_COLUMNS",
    "GROUPINGS",
    "metric_columns",
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


def _bootstrap_means(
    values: np.ndarray, clusters: np.ndarray, n_boot: int, seed: int
) -> np.ndarray:
    """Cluster-bootstrap means, shape (n_boot, n_metrics), NaN-aware."""
    codes, uniques = pd.factorize(clusters)
    n_clusters = len(uniques)
    finite = ~np.isnan(values)
    sums = np.zeros((n_clusters, values.shape[1]))
    counts = np.zeros((n_clusters, values.shape[1]))
    np.add.at(sums, codes, np.where(finite, values, 0.0))
    np.add.at(counts, codes, finite.astype(float))
    rng = np.random.default_rng(seed)
    # Multinomial counts = how often each cluster is drawn: memory n_boot×n_clusters.
    weights = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ sums) / (weights @ counts)


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
        metrics: metric columns; default :func:`metric_columns`.
        n_boot: bootstrap resamples (≥ 1).
        ci: coverage of the percentile interval, in (0, 1).
        seed: seed of the bootstrap.

    Returns:
        Long table: ``by`` columns, then metric, n, n_subjects, mean, median,
        ci_low, ci_high.
    """
    metrics = _checked_metrics(df, by, metrics, n_boot, ci)
    if df.empty or not metrics:
        return pd.DataFrame(columns=[*by, *_OUT_COLUMNS])
    percentiles = [(1.0 - ci) / 2.0 * 100.0, (1.0 + ci) / 2.0 * 100.0]
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows += [(*key, *row) for row in _group_rows(group, metrics, int(n_boot), seed, percentiles)]
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
    metrics = metric_columns(df) if metrics is None else list(metrics)
    bad = [m for m in metrics if m not in df.columns or m in ID_COLUMNS]
    if bad:
        raise ValueError(f"not metric columns of the table: {bad}")
    return metrics


def _group_rows(group: pd.DataFrame, metrics: list[str], n_boot: int, seed: int, percentiles) -> list[tuple]:
    """One group's (metric, n, n_subjects, mean, median, ci_low, ci_high) rows."""
    vals = group[metrics].astype(float).to_numpy()
    # Center is part of the cluster id: subject ids need only be unique per center.
    clusters = (group["center"].astype(str) + "\x00" + group["subject"].astype(str)).to_numpy()
    boot = _bootstrap_means(vals, clusters, n_boot, seed)
    rows = []
    for j, m in enumerate(metrics):
        v = vals[:, j]
        ok = ~np.isnan(v)
        b = boot[:, j][~np.isnan(boot[:, j])]
        lo, hi = np.percentile(b, percentiles) if b.size else (np.nan, np.nan)
        rows.append((
            _RENAME.get(m, m),
            int(ok.sum()),
            int(pd.unique(clusters[ok]).size),
            float(v[ok].mean()) if ok.any() else np.nan,
            float(np.median(v[ok])) if ok.any() else np.nan,
            float(lo),
            float(hi),
        ))
    return rows


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
