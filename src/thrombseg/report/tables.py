"""Paper-ready tables as TSV (numbers), Markdown and LaTeX (booktabs).

* ``per_center``: one row per (experiment, center) plus an "all centers" row per experiment, over
  each patient's full sequence set (the row with the most sequences): n patients, Dice mean
  [95 % CI], detection rate [95 % CI] (patients with a thrombus only), false-positive components
  per patient (mean [95 % CI]); with thrombus-negative patients or a presence probability also
  patient-level sensitivity, specificity, FP components per negative patient and the presence
  AUC (:mod:`thrombseg.evaluation.aggregate`). Intervals are
  :func:`thrombseg.evaluation.aggregate.summarize`'s percentile bootstrap with patients as the
  resampling unit.
* ``per_sequence_set``: one row per (experiment, sequence set), read from the evaluation stage's
  ``per_sequence_set.tsv`` (same statistics), largest sets first.

The TSV keeps full-precision numbers (``*_mean``, ``*_ci_low``, ``*_ci_high``); Markdown and LaTeX
show ``mean [low, high]`` rounded to ``digits``. The patient-level columns (:data:`PATIENT_LEVEL`)
are shown only where some row has a value (a cohort without negative patients has no specificity);
the TSV always has them (NaN).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..core.io import write_text
from ..evaluation.aggregate import default_metrics, summarize
from .figures import concat_tables, full_set_rows

__all__ = [
    "ALL_CENTERS",
    "per_center_table",
    "per_sequence_set_table",
    "format_table",
    "to_markdown",
    "to_latex",
    "write_table",
    "write_tables",
]

ALL_CENTERS = "all centers"
# (metric in the per-subject table, name in the aggregated tables, column title, digits)
METRICS = (
    ("dice", "dice", "Dice mean [95 % CI]", 2),
    ("detected", "detection_rate", "Detection rate [95 % CI]", 2),
    ("n_fp_components", "n_fp_components", "FP components [95 % CI]", 2),
    ("patient_sensitivity", "patient_sensitivity", "Sensitivity [95 % CI]", 2),
    ("patient_specificity", "patient_specificity", "Specificity [95 % CI]", 2),
    ("n_fp_components_per_negative", "n_fp_components_per_negative", "FP components / negative [95 % CI]", 2),
    ("presence_auc", "presence_auc", "Presence AUC [95 % CI]", 2),
)
# Display columns shown only when they hold a value (the first three are always shown).
PATIENT_LEVEL = ("patient_sensitivity", "patient_specificity", "n_fp_components_per_negative", "presence_auc")


def _wide(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Long summarize() output -> one row per key with <metric>_{mean,ci_low,ci_high,n}."""
    out = None
    for _, agg_name, _, _ in METRICS:
        s = summary[summary["metric"] == agg_name]
        s = s[[*keys, "n", "mean", "ci_low", "ci_high"]].rename(
            columns={"n": f"{agg_name}_n", "mean": f"{agg_name}_mean", "ci_low": f"{agg_name}_ci_low",
                     "ci_high": f"{agg_name}_ci_high"})
        out = s if out is None else out.merge(s, on=keys, how="outer")
    return out


def per_center_table(per_subject, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Numeric per-center × experiment table (see module docstring)."""
    df = full_set_rows(concat_tables(per_subject))
    df["center"] = df["center"].astype(str)
    df["experiment"] = df["experiment"].astype(str)
    known = default_metrics(df)
    metrics = [m for m, _, _, _ in METRICS if m in known]
    by_center = summarize(df, ["experiment", "center"], metrics, n_boot=n_boot, seed=seed)
    pooled = summarize(df, ["experiment"], metrics, n_boot=n_boot, seed=seed)
    pooled.insert(1, "center", ALL_CENTERS)
    wide = _wide(pd.concat([by_center, pooled], ignore_index=True), ["experiment", "center"])
    n = df.groupby("experiment")["subject"].nunique().rename("n").reset_index().assign(center=ALL_CENTERS)
    n = pd.concat([df.groupby(["experiment", "center"])["subject"].nunique().rename("n").reset_index(), n])
    wide = n.merge(wide, on=["experiment", "center"], how="left")
    wide["_all"] = wide["center"] == ALL_CENTERS
    wide = wide.sort_values(["experiment", "_all", "center"], kind="mergesort").drop(columns="_all")
    return wide.reset_index(drop=True)


def per_sequence_set_table(per_sequence_set) -> pd.DataFrame:
    """Numeric per-(experiment, sequence set) table from ``per_sequence_set.tsv`` files."""
    df = concat_tables(per_sequence_set)
    df["experiment"] = df["experiment"].astype(str)
    df["sequence_set"] = df["sequence_set"].astype(str)
    n = df.groupby(["experiment", "sequence_set"])["n_subjects"].max().rename("n").reset_index()
    wide = n.merge(_wide(df, ["experiment", "sequence_set"]), on=["experiment", "sequence_set"], how="left")
    wide.insert(2, "n_sequences", wide["sequence_set"].str.count(r"\+") + 1)
    wide = wide.sort_values(["experiment", "n_sequences", "sequence_set"], ascending=[True, False, True],
                            kind="mergesort")
    return wide.reset_index(drop=True)


def _fmt_ci(mean, lo, hi, digits: int) -> str:
    if pd.isna(mean):
        return "n/a"
    if pd.isna(lo) or pd.isna(hi):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def format_table(numeric: pd.DataFrame, keys: list[str], key_titles: list[str]) -> pd.DataFrame:
    """Display table: key columns, ``n``, then ``mean [low, high]`` per metric."""
    out = pd.DataFrame({t: numeric[k].astype(str) for k, t in zip(keys, key_titles)})
    out["n"] = numeric["n"].astype(int).astype(str)
    for _, agg, title, digits in METRICS:
        shown = f"{agg}_mean" in numeric and (agg not in PATIENT_LEVEL or numeric[f"{agg}_mean"].notna().any())
        if shown:
            out[title] = [_fmt_ci(m, lo, hi, digits) for m, lo, hi in
                          zip(numeric[f"{agg}_mean"], numeric[f"{agg}_ci_low"], numeric[f"{agg}_ci_high"])]
    return out.reset_index(drop=True)


def to_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """GitHub-flavoured pipe table (text left-aligned, numbers right-aligned)."""

    def cell(v) -> str:
        return str(v).replace("|", r"\|").replace("\n", " ")

    numeric_cols = [c for c in table.columns if c != table.columns[0] and
                    all(_looks_numeric(v) for v in table[c])]
    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if c in numeric_cols else ":---" for c in table.columns) + "|")
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _looks_numeric(v) -> bool:
    s = str(v)
    return s == "n/a" or bool(s) and (s[0].isdigit() or (s[0] == "-" and s[1:2].isdigit()))


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(s))


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    numeric_cols = [c for c in table.columns if c != table.columns[0] and
                    all(_looks_numeric(v) for v in table[c])]
    spec = "".join("r" if c in numeric_cols else "l" for c in table.columns)
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    prev = None
    for row in table.itertuples(index=False):
        if prev is not None and row[0] != prev:
            lines.append(r"\midrule")
        prev = row[0]
        lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(numeric: pd.DataFrame, display: pd.DataFrame, out, *, caption: str, label: str
                ) -> dict[str, Path]:
    """``<out>.tsv`` (numeric), ``<out>.md`` and ``<out>.tex`` (display); returns ext -> path."""
    base = Path(out)
    if base.suffix in (".tsv", ".md", ".tex"):
        base = base.with_suffix("")
    paths = {ext: base.with_name(f"{base.name}.{ext}") for ext in ("tsv", "md", "tex")}
    write_text(numeric.to_csv(sep="\t", index=False, na_rep="NaN", float_format="%.6g"), paths["tsv"])
    write_text(to_markdown(display, caption), paths["md"])
    write_text(to_latex(display, caption, label), paths["tex"])
    return paths


_PATIENT_LEVEL_CAPTION = (
    ". Where shown: sensitivity = patients with any predicted thrombus among those with one; specificity = "
    "patients with an empty prediction among those without one; FP components / negative = per patient "
    "without a thrombus; presence AUC = ROC AUC of the predicted presence probability (of the binary "
    "presence answer when no probability is given) against the true presence.")


def write_tables(per_subject: Iterable, per_sequence_set: Iterable, out_dir, *, n_boot: int = 2000,
                 seed: int = 0) -> dict[str, dict[str, Path]]:
    """Both tables into ``out_dir``: ``per_center.{tsv,md,tex}``, ``per_sequence_set.{tsv,md,tex}``."""
    out_dir = Path(out_dir)
    pc = per_center_table(per_subject, n_boot=n_boot, seed=seed)
    ps = per_sequence_set_table(per_sequence_set)
    return {
        "per_center": write_table(
            pc, format_table(pc, ["experiment", "center"], ["Experiment", "Center"]), out_dir / "per_center",
            caption="Thrombus segmentation per center and experiment with all available sequences: "
                    "n test patients; means with 95 % bootstrap confidence intervals (patients resampled); "
                    "detection rate over patients with a thrombus; FP components = false-positive "
                    "connected components per patient" + _PATIENT_LEVEL_CAPTION,
            label="tab:per-center"),
        "per_sequence_set": write_table(
            ps, format_table(ps, ["experiment", "sequence_set"], ["Experiment", "Sequences"]),
            out_dir / "per_sequence_set",
            caption="Thrombus segmentation per set of sequences given to the model (missing-sequence "
                    "robustness): n test patients that have the set; means with 95 % bootstrap confidence "
                    "intervals" + _PATIENT_LEVEL_CAPTION,
            label="tab:per-sequence-set"),
    }

