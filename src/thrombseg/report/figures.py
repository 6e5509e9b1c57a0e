"""Paper figures of a thrombseg run, one function per figure.

Every ``plot_*`` function takes tables already read into pandas (the evaluation stage's
``per_subject.tsv`` / ``per_sequence_set.tsv``, see :mod:`thrombseg.evaluation.aggregate`), writes
``<out>.png`` and ``<out>.pdf`` atomically (:func:`thrombseg.core.io.atomic_path`) and returns the
two paths. Colours come from seaborn's colour-blind-safe "colorblind" palette
(categorical) and cividis (continuous); every axis names its unit.

"Each subject's full sequence set" is the row with the largest ``n_sequences`` of a subject
(:func:`full_set_rows`): inference predicts every subset of the patient's sequences, and the
largest is "all its available sequences".

Figures drawn from Matplotlib's object API (``matplotlib.figure.Figure``): no pyplot state, no GUI
backend needed, nothing leaks between figures.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..core.case import load_case
from ..core.io import atomic_path
from ..core.sequences import SEQUENCES, sources
from ..evaluation.aggregate import presence_flag, summarize
from ..evaluation.paired import compare_by

log = logging.getLogger("thrombseg.report")

__all__ = [
    "FIGURE_DPI",
    "TRUTH_COLOR",
    "PRED_COLOR",
    "palette",
    "full_set_rows",
    "plot_per_center_dice",
    "plot_per_center_detection",
    "plot_missing_sequence_heatmap",
    "ablation_rows",
    "paired_ablation_rows",
    "plot_dropout_ablation",
    "plot_size_vs_detection",
    "calibration_bins",
    "plot_presence_calibration",
    "plot_center_overlays",
    "plot_overlays",
    "make_experiment_figures",
    "make_comparison_figures",
]

FIGURE_DPI = 150
# Okabe-Ito orange (truth, solid) and sky blue (prediction, dashed): distinguishable with every
# common colour-vision deficiency, and by line style as well.
TRUTH_COLOR = "#E69F00"
PRED_COLOR = "#56B4E9"
SUSCEPTIBILITY_ORDER = sources("swi")  # the overlays' background: SWI, else T2*-GRE
# The heatmap's metrics: (metric in per_sequence_set.tsv, column title, colour map, higher is better)
HEATMAP_METRICS = (
    ("dice", "Mean Dice\n(0–1)", "cividis", True),
    ("detection_rate", "Detection rate\n(fraction)", "cividis", True),
    ("n_fp_components", "FP components\n(count / patient)", "cividis_r", False),
)
# Appended to a cross-experiment figure's title when the run has a single experiment (the demo
# config): the figure then shows that experiment alone, and says so.
CALIBRATION_BINS = 10  # equal-width presence-probability bins of the reliability plot
NO_PRESENCE_PROB_NOTE = ("no presence probability in this run: the predictions give no per-patient\n"
                         "probability that a thrombus is present (column presence_prob empty or absent),\n"
                         "so there is nothing to calibrate")
SINGLE_EXPERIMENT_NOTE = ("only one experiment in this run ({label}): nothing to compare;\n"
                          "add experiments (e.g. dropout none / fixed, README \"Paper configuration\")")


def palette(n: int) -> list:
    """``n`` colours of seaborn's colour-blind-safe categorical palette."""
    return sns.color_palette("colorblind", max(int(n), 1))


# --------------------------------------------------------------------------------------- helpers
def _out_base(out) -> Path:
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out


def _save(fig: Figure, out) -> tuple[Path, Path]:
    """Write ``<out>.png`` and ``<out>.pdf`` atomically; return their paths."""
    base = _out_base(out)
    paths = []
    for ext in ("png", "pdf"):
        path = base.with_name(f"{base.name}.{ext}")
        meta = {"Creator": "thrombseg"} if ext == "png" else {"Creator": "thrombseg", "CreationDate": None}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=FIGURE_DPI, bbox_inches="tight", metadata=meta)
        paths.append(path)
    return paths[0], paths[1]


def read_table(table) -> pd.DataFrame:
    """A copy of a DataFrame, or a TSV file read into one."""
    if isinstance(table, pd.DataFrame):
        return table.copy()
    return pd.read_csv(table, sep="\t")


def concat_tables(tables) -> pd.DataFrame:
    """One DataFrame from a table, a path or a list of them."""
    if isinstance(tables, (pd.DataFrame, str, os.PathLike)):
        tables = [tables]
    frames = [read_table(t) for t in tables]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _require(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; has {list(df.columns)}")


def full_set_rows(per_subject: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, center, subject): the one with the most sequences (all available)."""
    _require(per_subject, ("experiment", "center", "subject", "sequence_set", "n_sequences"), "per-subject table")
    d = per_subject.sort_values(
        ["experiment", "center", "subject", "n_sequences", "sequence_set"],
        ascending=[True, True, True, False, True], kind="mergesort",
    )
    return d.drop_duplicates(["experiment", "center", "subject"], keep="first").reset_index(drop=True)


def _experiments(df: pd.DataFrame, labels: Mapping[str, str] | None) -> tuple[list[str], dict[str, str]]:
    exps = list(dict.fromkeys(str(e) for e in df["experiment"])) if "experiment" in df else []
    exps = sorted(exps)
    labels = {e: (labels or {}).get(e, e) for e in exps}
    return exps, labels


def _sequence_label(s: str) -> str:
    return s.upper() if s in ("swi", "dwi", "adc", "flair", "t1") else ("T2*" if s == "t2star" else s)


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson 95 % interval of a binomial proportion."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _single_note(exps: list[str], lab: Mapping[str, str], compare: bool) -> str:
    """Title suffix of a cross-experiment figure drawn from fewer than two experiments."""
    if not compare or len(exps) > 1:
        return ""
    return "\n" + SINGLE_EXPERIMENT_NOTE.format(label=", ".join(lab[e] for e in exps) or "none")


def _empty_figure(out, title: str, message: str) -> tuple[Path, Path]:
    fig = Figure(figsize=(5, 2.5))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    return _save(fig, out)


# --------------------------------------------------------------------------- per-center figures
def plot_per_center_dice(per_subject, out, labels: Mapping[str, str] | None = None, *,
                         compare: bool = False) -> tuple[Path, Path]:
    """Dice per center (box + one point per patient), experiments side by side (hue).

    Uses each patient's full sequence set (:func:`full_set_rows`). ``compare``: a cross-experiment
    figure, whose title says so when there is a single experiment.
    """
    df = full_set_rows(read_table(per_subject))
    df = df[df["dice"].notna()]
    title = "Thrombus Dice per center (all available sequences)"
    if df.empty:
        return _empty_figure(out, title, "no patient with a Dice value")
    exps, lab = _experiments(df, labels)
    df["Experiment"] = df["experiment"].astype(str).map(lab)
    centers = sorted(df["center"].astype(str).unique())
    df["center"] = df["center"].astype(str)
    pal = dict(zip([lab[e] for e in exps], palette(len(exps))))
    fig = Figure(figsize=(max(4.5, 1.0 + 1.2 * len(centers) * max(1.0, 0.6 * len(exps))), 4.0))
    ax = fig.add_subplot()
    hue_order = [lab[e] for e in exps]
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated `vert`
        warnings.simplefilter("ignore", DeprecationWarning)
        sns.boxplot(data=df, x="center", y="dice", hue="Experiment", order=centers, hue_order=hue_order,
                    palette=pal, showfliers=False, width=0.7, boxprops={"alpha": 0.45}, ax=ax)
    sns.stripplot(data=df, x="center", y="dice", hue="Experiment", order=centers, hue_order=hue_order,
                  palette=pal, dodge=len(exps) > 1, jitter=0.12, size=5, edgecolor="0.15", linewidth=0.7,
                  legend=False, ax=ax)
    counts = df.groupby("center")["subject"].nunique()
    ax.set_xticks(range(len(centers)), [f"{c}\n(n={counts.get(c, 0)})" for c in centers])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("Center (n = test patients)")
    ax.set_ylabel("Dice coefficient (unitless, 0–1)")
    note = _single_note(exps, lab, compare)
    ax.set_title(title + note, **({"fontsize": 10} if note else {}))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="Experiment", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, out)


def plot_per_center_detection(per_subject, out, labels: Mapping[str, str] | None = None, *,
                              n_boot: int = 2000, seed: int = 0, compare: bool = False) -> tuple[Path, Path]:
    """Detection rate per center (bars) with its 95 % percentile-bootstrap interval.

    The interval is :func:`thrombseg.evaluation.aggregate.summarize`'s (patients resampled),
    over each patient's full sequence set; patients without a thrombus (``detected`` NaN) are left
    out, as in the evaluation tables.
    """
    df = full_set_rows(read_table(per_subject))
    df["center"] = df["center"].astype(str)
    title = "Thrombus detection rate per center (all available sequences)"
    df = df[df["detected"].notna()]
    if df.empty:
        return _empty_figure(out, title, "no patient with a thrombus to detect")
    s = summarize(df, ["experiment", "center"], ["detected"], n_boot=n_boot, seed=seed)
    hits = df.groupby(["experiment", "center"])["detected"].sum()
    exps, lab = _experiments(df, labels)
    centers = sorted(df["center"].unique())
    cols = palette(len(exps))
    width = 0.8 / len(exps)
    fig = Figure(figsize=(max(4.5, 1.0 + 1.2 * len(centers) * max(1.0, 0.6 * len(exps))), 4.0))
    ax = fig.add_subplot()
    for i, e in enumerate(exps):
        se = s[s["experiment"].astype(str) == e].set_index("center")
        xs = np.arange(len(centers)) + (i - (len(exps) - 1) / 2) * width
        mean = np.array([se["mean"].get(c, np.nan) for c in centers], float)
        lo = np.array([se["ci_low"].get(c, np.nan) for c in centers], float)
        hi = np.array([se["ci_high"].get(c, np.nan) for c in centers], float)
        ax.bar(xs, np.nan_to_num(mean), width=width * 0.92, color=cols[i], edgecolor="0.2", linewidth=0.6,
               label=lab[e])
        ok = ~np.isnan(mean)
        ax.errorbar(xs[ok], mean[ok], yerr=[mean[ok] - lo[ok], hi[ok] - mean[ok]], fmt="none", ecolor="0.1",
                    elinewidth=1.2, capsize=4)
        for x, c in zip(xs, centers):
            n = int(se["n"].get(c, 0)) if c in se.index else 0
            k = int(hits.get((e, c), 0))
            ax.text(x, 1.06, f"{k}/{n}" if n else "n/a", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(centers)), centers)
    ax.set_ylim(0, 1.16)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("Center (labels above bars: detected / patients)")
    ax.set_ylabel("Detection rate (fraction of patients)")
    note = _single_note(exps, lab, compare)
    ax.set_title(title + note, **({"fontsize": 10} if note else {}))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="Experiment (error bar: 95 % bootstrap CI)", loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)
    return _save(fig, out)


# ------------------------------------------------------------------------- missing sequences
def _set_order(sets: Iterable[str]) -> list[str]:
    return sorted(set(sets), key=lambda s: (-len(s.split("+")), s))


def plot_missing_sequence_heatmap(per_sequence_set, out, labels: Mapping[str, str] | None = None, *,
                                  compare: bool = False) -> tuple[Path, Path]:
    """Sequence subset × metric heatmap (mean Dice, detection rate, FP components per patient).

    Rows: every subset of sequences given to the model (dots mark the sequences it contains,
    n = patients); one block of columns per experiment, side by side, on shared colour scales
    (brighter = better for every metric). Values are the means of ``per_sequence_set.tsv``.
    """
    df = concat_tables(per_sequence_set)
    _require(df, ("experiment", "sequence_set", "metric", "mean", "n_subjects"), "per-sequence-set table")
    df["experiment"] = df["experiment"].astype(str)
    metrics = [m for m in HEATMAP_METRICS if m[0] in set(df["metric"])]
    title = "Segmentation with missing sequences"
    if df.empty or not metrics:
        return _empty_figure(out, title, "no per-sequence-set metrics")
    exps, lab = _experiments(df, labels)
    sets = _set_order(df["sequence_set"].astype(str))
    seqs = sorted({s for ss in sets for s in ss.split("+")},
                  key=lambda s: (["swi", "t2star", "phase", "dwi", "adc", "flair", "t1"] + [s]).index(s))
    n_rows = len(sets)
    fp_max = df.loc[df["metric"] == "n_fp_components", "mean"].max()
    fp_max = float(fp_max) if pd.notna(fp_max) and fp_max > 0 else 1.0
    ranges = {"dice": (0.0, 1.0), "detection_rate": (0.0, 1.0), "n_fp_components": (0.0, fp_max)}
    # Columns: presence matrix, then per experiment its metric columns and a spacer.
    blocks = []
    width_ratios = [0.32 * len(seqs) + 0.3]
    for i in range(len(exps)):
        if i:
            width_ratios.append(0.35)
        blocks.append(list(range(len(width_ratios), len(width_ratios) + len(metrics))))
        width_ratios += [1.0] * len(metrics)
    gap = 2.2 / (n_rows + 0.9)  # hspace is relative to the mean row height
    fig_h = 0.30 * n_rows + 3.0
    fig = Figure(figsize=(sum(width_ratios) * 1.1 + 1.4, fig_h))
    gs = fig.add_gridspec(2, len(width_ratios), width_ratios=width_ratios, height_ratios=[n_rows, 0.9],
                          wspace=0.08, hspace=gap, top=1 - 1.5 / fig_h, bottom=0.4 / fig_h)
    # Presence matrix: which sequences each row's subset holds.
    axp = fig.add_subplot(gs[0, 0])
    for r, ss in enumerate(sets):
        have = set(ss.split("+"))
        for c, s in enumerate(seqs):
            axp.scatter(c, r, s=40, color="0.15" if s in have else "0.85", zorder=3)
        present = [c for c, s in enumerate(seqs) if s in have]
        if len(present) > 1:
            axp.plot([min(present), max(present)], [r, r], color="0.15", lw=1.2, zorder=2)
    axp.set_ylim(n_rows - 0.5, -0.5)
    axp.set_xlim(-0.6, len(seqs) - 0.4)
    axp.set_xticks(range(len(seqs)), [_sequence_label(s) for s in seqs], rotation=90)
    axp.xaxis.tick_top()
    axp.set_yticks(range(n_rows), [len(ss.split("+")) for ss in sets])
    axp.set_ylabel("Sequences given to the model (count; dots: which)")
    for sp in ("right", "bottom"):
        axp.spines[sp].set_visible(False)
    cbar_labels = {"dice": "Dice\n(0–1)", "detection_rate": "Detection\n(fraction)",
                   "n_fp_components": "FP components\n(count / patient)"}
    last = None
    for b, e in enumerate(exps):
        de = df[df["experiment"] == e]
        for j, (m, mtitle, cmap, _) in enumerate(metrics):
            col = blocks[b][j]
            dm = de[de["metric"] == m].set_index("sequence_set")
            vals = pd.DataFrame({mtitle: [dm["mean"].get(s, np.nan) for s in sets]}, index=sets)
            ax = fig.add_subplot(gs[0, col])
            vmin, vmax = ranges[m]
            fmt = ".2f" if m != "n_fp_components" else ".1f"
            # Colour bars once (under the first experiment): the scales are shared.
            cax = fig.add_subplot(gs[1, col]) if b == 0 else None
            sns.heatmap(vals, ax=ax, cbar=b == 0, cbar_ax=cax, cmap=cmap, vmin=vmin, vmax=vmax, annot=True,
                        fmt=fmt, annot_kws={"fontsize": 7}, linewidths=0.4, linecolor="white",
                        cbar_kws={"orientation": "horizontal"})
            if cax is not None:
                cax.set_xlabel(cbar_labels[m], fontsize=7)
                cax.tick_params(labelsize=7)
                cax.xaxis.set_major_locator(MaxNLocator(3))
                cax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_yticks([])
            ax.set_ylabel("")
            ax.xaxis.tick_top()
            ax.tick_params(axis="x", labelsize=7, length=0)
            last = ax
        # Experiment name centred over its block of columns.
        x0 = gs[0, blocks[b][0]].get_position(fig).x0
        x1 = gs[0, blocks[b][-1]].get_position(fig).x1
        top = gs[0, blocks[b][0]].get_position(fig).y1
        fig.text((x0 + x1) / 2, top + 0.45 / fig_h, lab[e].replace(" (", "\n("), ha="center",
                 va="bottom", fontsize=9, fontweight="bold")
    # Patients per row (the most over experiments) on the right.
    nsub = df[df["metric"] == metrics[0][0]].groupby("sequence_set")["n_subjects"].max()
    for r, ss in enumerate(sets):
        last.text(1.06, r + 0.5, f"n={int(nsub.get(ss, 0))}", transform=last.get_yaxis_transform(),
                  va="center", ha="left", fontsize=7)
    note = _single_note(exps, lab, compare)
    fig.suptitle(title + "\n(rows: subsets of each patient's sequences; shared colour scales, brighter = better)"
                 + note,
                 y=1 - 1.5 / fig_h + 1.05 / fig_h, va="bottom", fontsize=10)
    return _save(fig, out)


# --------------------------------------------------------------------------------- ablation
def _withheld(per_subject: pd.DataFrame) -> pd.DataFrame:
    """``per_subject`` with ``withheld``: how many of the patient's own sequences a row lacks."""
    df = per_subject.copy()
    _require(df, ("experiment", "subject", "center", "n_sequences", "dice", "detected"), "per-subject table")
    df["experiment"] = df["experiment"].astype(str)
    full = df.groupby(["experiment", "center", "subject"])["n_sequences"].transform("max")
    df["withheld"] = (full - df["n_sequences"]).astype(int)
    return df


def ablation_rows(per_subject: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, center, subject, withheld): mean ``dice`` / ``detected`` over the
    subsets that withhold ``withheld`` of the patient's own sequences (0 = its full set)."""
    return (_withheld(per_subject).groupby(["experiment", "center", "subject", "withheld"])[["dice", "detected"]]
            .mean().reset_index())


def paired_ablation_rows(per_subject: pd.DataFrame, reference: str, *, n_boot: int = 2000,
                         seed: int = 0) -> pd.DataFrame:
    """``reference - arm`` per number of sequences withheld, for every arm that predicted some of the
    reference's patients (``thrombseg.evaluation.paired.compare``: 95 % bootstrap interval over
    patients; detection: exact McNemar at 0 withheld, sign test over patients where a patient has
    several subsets). Arms of another protocol (no shared patient) are left out."""
    df = _withheld(per_subject)
    ref = df[df["experiment"] == reference]
    parts = []
    for arm in sorted(set(df["experiment"]) - {reference}):
        both = pd.concat([ref, df[df["experiment"] == arm]])
        shared = both.groupby(["center", "subject", "sequence_set"])["experiment"].transform("nunique") == 2
        if shared.any():
            parts.append(compare_by(both[shared], reference, arm, "withheld", ("dice", "detected"),
                                    n_boot=n_boot, seed=seed).assign(arm=arm))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    out["withheld"] = out["group"].astype(int)
    return out


def _paired_panel(ax, paired: pd.DataFrame, metric: str, arms: list[str], lab, pal, xs) -> None:
    """Reference - arm with its interval at each x, arms side by side; detection p-values beside."""
    ax.axhline(0, color="0.4", lw=0.8)
    width = 0.5 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        d = paired[(paired["arm"] == arm) & (paired["metric"] == metric)].sort_values("withheld")
        x = d["withheld"].to_numpy() + (i - (len(arms) - 1) / 2) * width
        err = np.clip([d["difference"] - d["ci_low"], d["ci_high"] - d["difference"]], 0, None)  # rounding
        ax.errorbar(x, d["difference"], yerr=err, fmt="o", color=pal[lab[arm]], capsize=3, label=lab[arm])
        if metric == "detected":
            for xi, row in zip(x, d.itertuples()):
                ax.annotate(f"p={row.p_value:.2g}", (xi, row.ci_high), textcoords="offset points",
                            xytext=(0, 3), ha="center", fontsize=7, color=pal[lab[arm]])
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlim(min(xs) - 0.4, max(xs) + 0.4)
    ax.grid(alpha=0.3)


def plot_dropout_ablation(per_subject, out, labels: Mapping[str, str] | None = None, *,
                          reference: str | None = None, n_boot: int = 2000, seed: int = 0) -> tuple[Path, Path]:
    """Mean Dice and detection rate vs number of sequences withheld, one line per experiment (top),
    and the paired difference ``reference - arm`` on the same patients (bottom).

    x is how many of a patient's own sequences were withheld from the model (0 = all of them,
    :func:`full_set_rows`): every patient is at x = 0 and at each x its protocol allows, so the
    points compare the same patients (x = number of sequences given would compare centers with
    different protocols). Top: each patient contributes one value per x (its mean over the subsets
    with that many withheld); lines are the mean over patients with a 95 % bootstrap band (patients
    resampled); tick labels give the patients at each x. Bottom (two or more experiments sharing
    patients): :func:`paired_ablation_rows`; ``reference`` defaults to the first experiment of
    ``labels`` (the config's order), else the first by name.
    """
    d0 = concat_tables(per_subject)
    g = ablation_rows(d0)
    title = "Dropout-schedule ablation under missing sequences"
    if g.empty:
        return _empty_figure(out, title, "no per-subject metrics")
    exps, lab = _experiments(g, labels)
    reference = reference or next((e for e in (labels or {}) if e in exps), exps[0])
    paired = paired_ablation_rows(d0, reference, n_boot=n_boot, seed=seed) if len(exps) > 1 else pd.DataFrame()
    g["Experiment"] = g["experiment"].map(lab)
    pal = dict(zip([lab[e] for e in exps], palette(len(exps))))
    markers = dict(zip([lab[e] for e in exps], ["o", "s", "D", "^", "v", "P", "X"] * 3))
    xs = sorted(g["withheld"].unique())
    n_at = g.groupby(["withheld", "experiment"])["subject"].nunique().groupby(level=0).max()
    ticks = [f"{x}\n(n={int(n_at.get(x, 0))})" + ("\nall given" if x == 0 else "") for x in xs]
    rows = 2 if len(paired) else 1
    fig = Figure(figsize=(9.5, 4.4 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    for ax, (col, ylab) in zip(axes[0], [("dice", "Mean Dice (unitless, 0–1)"),
                                         ("detected", "Detection rate (fraction of patients)")]):
        d = g[g[col].notna()]
        if not d.empty:
            sns.lineplot(data=d, x="withheld", y=col, hue="Experiment", hue_order=[lab[e] for e in exps],
                         style="Experiment", markers=markers, dashes=False, palette=pal,
                         errorbar=("ci", 95), n_boot=n_boot, seed=seed, ax=ax, legend=ax is axes[0][1])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(xs, ticks)
        ax.set_xlim(min(xs) - 0.3, max(xs) + 0.3)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel("")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
    if axes[0][1].get_legend() is not None:
        sns.move_legend(axes[0][1], "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                        title="Experiment (band: 95 % bootstrap CI)")
    if rows == 2:
        arms = [e for e in exps if e in set(paired["arm"])]
        for ax, (col, ylab) in zip(axes[1], [("dice", f"Dice: {reference} − arm"),
                                             ("detected", f"Detection: {reference} − arm")]):
            _paired_panel(ax, paired, col, arms, lab, pal, xs)
            ax.set_ylabel(ylab + "\n(paired, 95 % bootstrap CI)", fontsize=9)
        axes[1][1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                          title=f"{lab[reference]} minus")
    fig.supxlabel("Sequences withheld from each patient's own set (count; n = patients at each point)",
                  fontsize=10)
    note = _single_note(exps, lab, True)
    fig.suptitle(title + note, **({"fontsize": 11} if note else {}))
    return _save(fig, out)


# ----------------------------------------------------------------------- size vs detection
def plot_size_vs_detection(per_subject, out, labels: Mapping[str, str] | None = None, *,
                           n_bins: int = 4) -> tuple[Path, Path]:
    """Detection rate per thrombus-volume bin (bars across the bin, 95 % Wilson interval), with
    each patient as a point at detected (1) / missed (0). Full sequence set of each patient."""
    df = full_set_rows(read_table(per_subject))
    _require(df, ("true_volume_mm3", "detected"), "per-subject table")
    df = df[(df["true_volume_mm3"] > 0) & df["detected"].notna()].copy()
    title = "Detection rate vs thrombus volume (all available sequences)"
    if df.empty:
        return _empty_figure(out, title, "no patient with a thrombus to detect")
    exps, lab = _experiments(df, labels)
    cols = palette(len(exps))
    v = df["true_volume_mm3"].to_numpy(float)
    nb = int(max(1, min(n_bins, df["subject"].nunique() // 3 or 1)))
    edges = np.unique(np.quantile(np.log10(v), np.linspace(0, 1, nb + 1)))
    if len(edges) < 2:
        edges = np.log10([v.min() / 1.5, v.max() * 1.5])
    edges = 10 ** edges
    edges[0] *= 0.98
    edges[-1] *= 1.02
    df["bin"] = np.clip(np.searchsorted(edges, df["true_volume_mm3"], side="right") - 1, 0, len(edges) - 2)
    rng = np.random.default_rng(0)
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    for i, e in enumerate(exps):
        de = df[df["experiment"].astype(str) == e]
        off = (i - (len(exps) - 1) / 2) * 0.025
        y = de["detected"].to_numpy(float) + off + rng.uniform(-0.03, 0.03, len(de))
        ax.scatter(de["true_volume_mm3"], y, s=22, color=cols[i], edgecolor="0.15", linewidth=0.5, alpha=0.85,
                   zorder=4)
        for b in range(len(edges) - 1):
            db = de[de["bin"] == b]
            if db.empty:
                continue
            n, k = len(db), int(db["detected"].sum())
            rate = k / n
            lo, hi = _wilson(k, n)
            xc = math.sqrt(edges[b] * edges[b + 1]) * (1 + off)
            ax.hlines(rate, edges[b], edges[b + 1], color=cols[i], lw=3, zorder=3,
                      label=lab[e] if b == 0 else None)
            ax.errorbar([xc], [rate], yerr=[[max(rate - lo, 0.0)], [max(hi - rate, 0.0)]], fmt="o", color=cols[i], ecolor="0.2",
                        ms=5, capsize=4, zorder=5)
            ax.text(xc, 1.1 - 0.05 * i, f"{k}/{n}", ha="center", va="bottom", fontsize=7, color="0.1")
    for x in edges[1:-1]:
        ax.axvline(x, color="0.75", lw=0.8, ls=":")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    # Minor ticks labelled too (a narrow range has few decades), only at 2 and 5 on wide ranges.
    wide = math.log10(edges[-1] / edges[0]) > 1.2
    lead = lambda v: round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0  # noqa: E731
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if not wide or lead(v) in (2, 5) else ""))
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_ylim(-0.1, 1.2)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("True thrombus volume (mm³, log scale; dotted: bin edges)")
    ax.set_ylabel("Detection rate (fraction of patients)\npoints: 1 = detected, 0 = missed (jittered)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    handles, labs = ax.get_legend_handles_labels()
    ax.legend(handles, labs, title="Experiment (bar: rate per bin;\nerror bar: 95 % Wilson CI;\n"
              "text: detected / patients)", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, out)


# ------------------------------------------------------------------------------ calibration
def calibration_bins(prob, present, n_bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Reliability table: one row per equal-width bin of [0, 1] holding at least one patient.

    Columns: bin (index), low, high, n, mean_prob (mean predicted probability), observed (fraction
    with a thrombus), ci_low / ci_high (95 % Wilson interval of ``observed``). Bins are [low, high),
    the last one closed, so a probability of 1 falls in it. Rows with a NaN are left out.
    """
    p, y = np.asarray(prob, float), np.asarray(present, float)
    ok = ~(np.isnan(p) | np.isnan(y))
    p, y = p[ok], y[ok]
    if ((p < 0) | (p > 1)).any():
        raise ValueError("presence probabilities must lie in [0, 1]")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in np.unique(idx):
        sel = idx == b
        k, n = int(y[sel].sum()), int(sel.sum())
        rows.append((int(b), b / n_bins, (b + 1) / n_bins, n, float(p[sel].mean()), k / n, *_wilson(k, n)))
    return pd.DataFrame(rows, columns=["bin", "low", "high", "n", "mean_prob", "observed", "ci_low", "ci_high"])


def plot_presence_calibration(per_subject, out, labels: Mapping[str, str] | None = None, *,
                              n_bins: int = CALIBRATION_BINS) -> tuple[Path, Path]:
    """Reliability plot of the per-patient thrombus-presence probability (full sequence set).

    Top: observed frequency of a thrombus vs mean predicted probability in each of ``n_bins``
    equal-width bins (:func:`calibration_bins`; 95 % Wilson interval, n above each point), the
    diagonal = perfect calibration. Bottom: patients per bin. Without ``presence_prob`` values the
    figure says so instead (:data:`NO_PRESENCE_PROB_NOTE`).
    """
    df = full_set_rows(read_table(per_subject))
    title = "Calibration of the thrombus-presence probability (all available sequences)"
    prob = pd.to_numeric(df["presence_prob"], errors="coerce") if "presence_prob" in df else None
    if prob is None or prob.notna().sum() == 0:
        return _empty_figure(out, title, NO_PRESENCE_PROB_NOTE)
    present = presence_flag(df, "truth")
    if present is None:
        raise ValueError(f"per-subject table lacks truth_present (or truth_empty); has {list(df.columns)}")
    df = df.assign(presence_prob=prob, present=present)
    exps, lab = _experiments(df, labels)
    cols = palette(len(exps))
    fig = Figure(figsize=(6.5, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="perfect calibration")
    width = 1.0 / n_bins / max(len(exps), 1)
    for i, e in enumerate(exps):
        de = df[df["experiment"].astype(str) == e]
        cb = calibration_bins(de["presence_prob"], de["present"], n_bins)
        if cb.empty:
            continue
        err = np.clip([cb["observed"] - cb["ci_low"], cb["ci_high"] - cb["observed"]], 0, None)
        top.errorbar(cb["mean_prob"], cb["observed"], yerr=err, fmt="o-", color=cols[i], ecolor=cols[i],
                     elinewidth=1.0, capsize=3, ms=5, alpha=0.9, label=f"{lab[e]} (n={int(cb['n'].sum())})")
        for x, y, n in zip(cb["mean_prob"], cb["observed"], cb["n"]):
            # one label row per experiment, so that the counts of two experiments do not overprint
            top.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(5, -11 - 9 * i), fontsize=7,
                         color=cols[i], fontweight="bold")
        bottom.bar(cb["low"] + (i + 0.5) * width, cb["n"], width=width * 0.9, color=cols[i], edgecolor="0.2",
                   linewidth=0.5)
    for x in np.linspace(0, 1, n_bins + 1):
        bottom.axvline(x, color="0.85", lw=0.6, zorder=0)
    top.set_xlim(-0.02, 1.02)
    top.set_ylim(-0.05, 1.05)
    top.set_ylabel("Observed frequency of a thrombus\n(fraction of patients; 95 % Wilson CI)")
    top.set_title(title, fontsize=10)
    top.grid(alpha=0.3)
    top.legend(title="Experiment (numbers: patients per bin)", loc="upper left", fontsize=8, title_fontsize=8)
    bottom.set_xlabel(f"Predicted thrombus-presence probability (mean per bin; {n_bins} equal-width bins)")
    bottom.set_ylabel("Patients\n(count)")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    return _save(fig, out)


# ----------------------------------------------------------------------------- overlays
def _load_harmonized(folder: Path, subject: str):
    """(image, sequence name, thrombus truth or None, brain mask or None, spacing) of a harmonized case."""
    case = load_case(folder, subject)
    seq = next((s for s in SUSCEPTIBILITY_ORDER if s in case.images),
               next(s for s in SEQUENCES if s in case.images))
    truth = case.labels.get("thrombus")
    return case.images[seq], seq, None if truth is None else np.asarray(truth) > 0, case.brain, case.spacing


def _pick_patients(d: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """(role, row) for the best, median and worst patient by Dice; roles merged when n < 3."""
    d = d[d["dice"].notna()].sort_values(["dice", "subject"], ascending=[False, True], kind="mergesort")
    if d.empty:
        return []
    idx = {"best": 0, "median": (len(d) - 1) // 2, "worst": len(d) - 1}
    picked: dict[int, list[str]] = {}
    for role, i in idx.items():
        picked.setdefault(i, []).append(role)
    return [(" / ".join(roles), d.iloc[i]) for i, roles in sorted(picked.items())]


def _load_prediction(folder: Path, subject: str, shape: tuple) -> np.ndarray | None:
    """The patient's predicted thrombus mask (None when the file is missing) on the harmonized grid."""
    path = folder / f"{subject}_thrombus_mask.nii.gz"
    if not path.is_file():
        return None
    pred = np.asarray(nib.load(str(path)).dataobj) > 0
    if pred.shape != shape:
        raise ValueError(f"{path}: shape {pred.shape} differs from the harmonized grid {shape}")
    return pred


def _overlay_focus(truth, pred, shape) -> tuple[int, float, float]:
    """(axial slice, x, y in voxels): the largest cross-section of the truth, else of the prediction."""
    ref = truth if truth is not None and truth.any() else (pred if pred is not None and pred.any() else None)
    if ref is None:
        return shape[2] // 2, shape[0] / 2, shape[1] / 2
    z = int(np.argmax(ref.sum(axis=(0, 1))))
    cx, cy = np.argwhere(ref[:, :, z]).mean(0)
    return z, cx, cy


def _draw_overlay_row(axes, img, truth, pred, brain, sp, z: int) -> list[float]:
    """The slice (brain only, 1-99 % window) with truth and prediction contours on both axes; its extent."""
    gray = colormaps["gray"].with_extremes(bad="black")
    sl = np.asarray(img[:, :, z], float)
    inside = np.asarray(brain[:, :, z]) > 0 if brain is not None and brain.shape == img.shape else sl != 0
    if not inside.any():
        inside = np.ones_like(sl, bool)
    lo, hi = np.percentile(sl[inside], [1, 99])
    sl = np.ma.masked_array(sl, mask=~inside)  # outside the brain: black
    X, Y = sl.shape
    ext = [0, X * sp[0], 0, Y * sp[1]]
    xs, ys = (np.arange(X) + 0.5) * sp[0], (np.arange(Y) + 0.5) * sp[1]
    for c, ax in enumerate(axes):
        ax.set_facecolor("black")
        ax.imshow(sl.T, cmap=gray, origin="lower", extent=ext, vmin=lo, vmax=hi if hi > lo else lo + 1,
                  interpolation="nearest" if c else "antialiased")
        if truth is not None and truth[:, :, z].any():
            ax.contour(xs, ys, truth[:, :, z].T.astype(float), levels=[0.5], colors=[TRUTH_COLOR],
                       linewidths=1.8 + 0.8 * c, linestyles="solid")
        if pred is not None and pred[:, :, z].any():
            ax.contour(xs, ys, pred[:, :, z].T.astype(float), levels=[0.5], colors=[PRED_COLOR],
                       linewidths=1.0 + 0.5 * c, linestyles="dashed")
        ax.set_xlabel("x (mm, left → right)", fontsize=8)
        ax.set_ylabel("y (mm, posterior → anterior)", fontsize=8)
        ax.tick_params(labelsize=7)
    return ext


def _zoom_and_titles(axes, ext, centre_mm, zoom_mm: float, role: str, row, seq: str, z: int, has_pred: bool):
    """Zoom window on the right (dotted box on the left) and both titles of one patient's row."""
    px, py = centre_mm
    h = min(zoom_mm / 2, min(ext[1], ext[3]) / 4)  # a zoom, even on a small field of view
    axes[1].set_xlim(px - h, px + h)
    axes[1].set_ylim(py - h, py + h)
    axes[0].add_patch(Rectangle((px - h, py - h), 2 * h, 2 * h, fill=False, ec="white", lw=0.8, ls=":"))
    axes[0].set_xlim(ext[0], ext[1])
    axes[0].set_ylim(ext[2], ext[3])
    det = row.get("detected", np.nan)
    det_s = "n/a" if pd.isna(det) else ("detected" if det else "missed")
    vol = row.get("true_volume_mm3", np.nan)
    vol_s = "" if pd.isna(vol) else f", thrombus {vol:.0f} mm³"
    no_pred = "" if has_pred else " (prediction file missing)"
    axes[0].set_title(f"{role}: {row['subject']}, {seq.upper() if seq != 't2star' else 'T2*'} slice z={z}\n"
                      f"Dice {float(row['dice']):.2f}, {det_s}{vol_s}{no_pred}", fontsize=9, loc="left")
    axes[1].set_title(f"zoom: {2 * h:.0f} mm window (dotted box)", fontsize=9)


def plot_center_overlays(per_subject, center: str, harmonized_root, predictions_root, out, *,
                         experiment: str | None = None, zoom_mm: float = 48.0) -> tuple[Path, Path]:
    """Best, median and worst patient of one center by Dice (full sequence set).

    Each row: the susceptibility image (SWI, else T2*-GRE, else the first available sequence) at the
    axial slice of the thrombus's largest cross-section, with the truth contour (orange, solid) and
    the prediction contour (sky blue, dashed); left the whole slice, right a ``zoom_mm`` window.
    """
    df = full_set_rows(read_table(per_subject))
    if experiment is not None:
        df = df[df["experiment"].astype(str) == str(experiment)]
    d = df[df["center"].astype(str) == str(center)]
    exp_name = experiment or (str(d["experiment"].iloc[0]) if len(d) else "")
    title = f"Center {center}: best, median and worst patient by Dice ({exp_name}, all available sequences)"
    picks = _pick_patients(d)
    if not picks:
        return _empty_figure(out, title, f"no evaluated patient in center {center}")
    fig = Figure(figsize=(8.6, 3.7 * len(picks) + 0.6))
    axes = np.atleast_2d(fig.subplots(len(picks), 2, gridspec_kw={"width_ratios": [1.25, 1.0]}))
    for r, (role, row) in enumerate(picks):
        sub = str(row["subject"])
        img, seq, truth, brain, sp = _load_harmonized(Path(harmonized_root) / sub, sub)
        pred = _load_prediction(Path(predictions_root) / sub, sub, img.shape)
        z, cx, cy = _overlay_focus(truth, pred, img.shape)
        ext = _draw_overlay_row(axes[r], img, truth, pred, brain, sp, z)
        _zoom_and_titles(axes[r], ext, (cx * sp[0], cy * sp[1]), zoom_mm, role, row, seq, z, pred is not None)
    handles = [Line2D([], [], color=TRUTH_COLOR, lw=2, ls="solid", label="truth (annotation)"),
               Line2D([], [], color=PRED_COLOR, lw=2, ls="dashed", label="prediction")]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, -0.025))
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(hspace=0.45, wspace=0.3, bottom=0.08)
    return _save(fig, out)


def plot_overlays(per_subject, harmonized_root, predictions_root, out_dir, *, experiment: str | None = None,
                  centers: Iterable[str] | None = None) -> dict[str, tuple[Path, Path]]:
    """:func:`plot_center_overlays` for every center: ``<out_dir>/<center>.png`` / ``.pdf``."""
    df = read_table(per_subject)
    centers = sorted(set(df["center"].astype(str))) if centers is None else [str(c) for c in centers]
    return {c: plot_center_overlays(df, c, harmonized_root, predictions_root, Path(out_dir) / c,
                                    experiment=experiment) for c in centers}


# ------------------------------------------------------------------------------- drivers
def make_experiment_figures(per_subject, per_sequence_set, harmonized_root, predictions_root, out_dir, *,
                            experiment: str | None = None, labels: Mapping[str, str] | None = None,
                            n_boot: int = 2000, centers: Iterable[str] | None = None) -> dict[str, Path]:
    """Every per-experiment figure into ``out_dir`` (returns name -> PNG path).

    ``per_center_dice``, ``per_center_detection``, ``missing_sequences``, ``size_vs_detection`` and
    ``overlays/<center>``.
    """
    out_dir = Path(out_dir)
    ps = read_table(per_subject)
    pss = read_table(per_sequence_set)
    out = {
        "per_center_dice": plot_per_center_dice(ps, out_dir / "per_center_dice", labels)[0],
        "per_center_detection": plot_per_center_detection(ps, out_dir / "per_center_detection", labels,
                                                          n_boot=n_boot)[0],
        "missing_sequences": plot_missing_sequence_heatmap(pss, out_dir / "missing_sequences", labels)[0],
        "size_vs_detection": plot_size_vs_detection(ps, out_dir / "size_vs_detection", labels)[0],
    }
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    for c, (png, _) in plot_overlays(ps, harmonized_root, predictions_root, out_dir / "overlays",
                                     experiment=experiment, centers=centers).items():
        out[f"overlays/{c}"] = png
    for name, p in out.items():
        log.info("figure %s -> %s", name, p)
    return out


def make_comparison_figures(per_subject, per_sequence_set, out: Mapping[str, str | Path], *,
                            labels: Mapping[str, str] | None = None, n_boot: int = 2000) -> dict[str, Path]:
    """Cross-experiment figures. ``out`` maps figure -> output path (PNG or stem) for any of
    ``ablation``, ``missing_sequences``, ``per_center_dice``, ``per_center_detection``."""
    ps = concat_tables(per_subject)
    pss = concat_tables(per_sequence_set)
    funcs = {
        "ablation": lambda p: plot_dropout_ablation(ps, p, labels, n_boot=n_boot),
        "missing_sequences": lambda p: plot_missing_sequence_heatmap(pss, p, labels, compare=True),
        "per_center_dice": lambda p: plot_per_center_dice(ps, p, labels, compare=True),
        "per_center_detection": lambda p: plot_per_center_detection(ps, p, labels, n_boot=n_boot, compare=True),
    }
    unknown = set(out) - set(funcs)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)}; known: {sorted(funcs)}")
    done = {name: funcs[name](path)[0] for name, path in out.items()}
    for name, p in done.items():
        log.info("figure %s -> %s", name, p)
    return done
