"""Quality control: a PNG montage per patient and a TSV per center with outliers flagged.

Montage: one row per co-registered sequence, three axial slices (through the thrombus when there is
one, else the brain centre) plus a coronal and a sagittal slice; brain-mask contour in red, thrombus
in yellow, infarct in cyan, the intracranial (skull-strip) mask dashed orange. Displayed in
neurological convention (patient right on the right).

Center TSV (:func:`write_center_qc`): one row per patient from its ``<subject>_preproc.json``:
registration similarity (Mattes MI before/after) per sequence, brain volume, intensity percentiles
per sequence, label volume preservation, seconds; ``flags`` lists every rule a row breaks and
``outlier`` is true when there is any flag. Rules: absolute (brain volume outside [700, 2300] mL,
a registration that lowers the MI by more than 0.02 (absolute or relative), label volume changed by
> 10 % or lost) and, with >= 5 patients in the center, robust z-scores
(|x - median| / (1.4826 MAD) > 3.5) of brain volume, MI and intensity percentiles.

matplotlib is imported by :func:`qc_montage` only, deliberately: it picks the Agg backend first and a
run without montages never loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..core.io import atomic_path, write_text
from ._io import to_nibabel

BRAIN_ML_RANGE = (700.0, 2300.0)
ROBUST_Z = 3.5
MIN_FOR_ROBUST = 5
MI_TOLERANCE = 0.02  # an already aligned pair can lose a little MI to interpolation: not a failure


def _canonical(img):
    """(array in RAS voxel order, spacing) of an ANTs image for display."""
    nii = nib.as_closest_canonical(to_nibabel(img))
    return np.asarray(nii.dataobj, np.float32), np.asarray(nii.header.get_zooms()[:3], float)


def _views(brain: np.ndarray, labels: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    """Three axial slices, a coronal and a sagittal one through the thrombus, else the infarct, else the brain."""
    focus = labels.get("thrombus")
    if focus is None or not focus.any():
        focus = labels.get("infarct")
    if focus is None or not focus.any():
        focus = brain if brain.any() else np.ones_like(brain)
    c = np.round(np.argwhere(focus).mean(axis=0)).astype(int)
    zs = np.argwhere(brain)[:, 2] if brain.any() else np.arange(brain.shape[2])
    z_lo, z_hi = int(zs.min()), int(zs.max())
    step = max(4, (z_hi - z_lo) // 6)
    axial = sorted({int(np.clip(c[2] + d, z_lo, z_hi)) for d in (-step, 0, step)})
    return [("ax", k) for k in axial] + [("cor", int(c[1])), ("sag", int(c[0]))]


def qc_montage(images: dict, mask, labels: dict | None, out_png: str | Path, title: str = "",
               icv=None) -> Path:
    """Write the QC montage. ``images``: {name: ANTs image on one grid}; ``mask``, ``labels``, ``icv``
    (intracranial mask, dashed orange) alike."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {k: v for k, v in (labels or {}).items() if v is not None}
    m, sp = _canonical(mask)
    m = m > 0.5
    labs = {k: _canonical(v)[0] > 0.5 for k, v in labels.items()}
    icv_arr = _canonical(icv)[0] > 0.5 if icv is not None else None
    views = _views(m, labs)
    # Okabe-Ito colours: distinguishable with every common colour-vision deficiency
    colors = {"thrombus": "#E69F00", "infarct": "#CC79A7"}
    names = list(images)
    fig, axes = plt.subplots(len(names), len(views), figsize=(2.2 * len(views), 2.3 * len(names)),
                             squeeze=False)
    fig.patch.set_facecolor("black")

    def sl(a, view, k):
        if view == "ax":
            return a[:, :, k].T, sp[1] / sp[0]
        if view == "cor":
            return a[:, k, :].T, sp[2] / sp[0]
        return a[k, :, :].T, sp[2] / sp[1]

    for r, name in enumerate(names):
        a, _ = _canonical(images[name])
        inside = a[m] if m.any() else a.ravel()
        lo, hi = np.percentile(inside, [1, 99.5]) if inside.size else (0, 1)
        for col, (view, k) in enumerate(views):
            ax = axes[r, col]
            s, aspect = sl(a, view, k)
            ax.imshow(s, cmap="gray", origin="lower", vmin=lo, vmax=hi if hi > lo else lo + 1,
                      aspect=aspect, interpolation="nearest")
            layers = [(m, "#56B4E9", 0.6, "solid")] + [(labs[n], colors.get(n, "#009E73"), 0.9, "solid") for n in labs]
            if icv_arr is not None:
                layers.insert(0, (icv_arr, "#F0E442", 0.5, "dashed"))
            for arr, colr, lw, ls in layers:
                s2, _ = sl(arr, view, k)
                if s2.any() and not s2.all():
                    ax.contour(s2.astype(float), [0.5], colors=colr, linewidths=lw, linestyles=ls)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, color="white", fontsize=9)
            if r == 0:
                ax.set_title(f"{view} {k}", color="white", fontsize=8)
    if title:
        fig.suptitle(title, color="white", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=90, facecolor="black", format="png")
    plt.close(fig)
    return Path(out_png)


def qc_row(meta: dict) -> dict:
    """One TSV row (flat dict) from a ``<subject>_preproc.json`` dictionary."""
    row: dict = {"subject": meta["subject"], "center": meta.get("center", ""),
                 "reference": meta["reference"], "sequences": ",".join(meta["sequences"]),
                 "skullstrip_backend": meta["skullstrip"]["backend"],
                 "brain_volume_ml": round(float(meta["brain_volume_ml"]), 2),
                 "icv_volume_ml": round(float(meta.get("icv_volume_ml", float("nan"))), 2)}
    for seq, reg in meta.get("registration", {}).items():
        row[f"mi_before_{seq}"] = reg.get("mi_before")
        row[f"mi_after_{seq}"] = reg.get("mi_after")
    for seq, pc in meta.get("intensity", {}).items():
        for k in ("p01", "p50", "p99"):
            row[f"{k}_{seq}"] = pc.get(k)
    for name, lab in meta.get("labels", {}).items():
        row[f"{name}_volume_mm3"] = lab.get("volume_moved_mm3")
        row[f"{name}_volume_ratio"] = lab.get("volume_ratio")
    row["seconds_total"] = meta.get("timings_s", {}).get("total")
    return row


def flag_outliers(df):
    """Add ``flags`` and ``outlier`` columns to a per-center QC table (see module doc for rules)."""
    flags: list[list[str]] = [[] for _ in range(len(df))]
    lo, hi = BRAIN_ML_RANGE
    for i, v in enumerate(df["brain_volume_ml"]):
        if not lo <= v <= hi:
            flags[i].append(f"brain_volume {v:.0f} mL outside [{lo:.0f}, {hi:.0f}]")
    for col in [c for c in df.columns if c.startswith("mi_after_")]:
        seq = col[len("mi_after_"):]
        before = df.get(f"mi_before_{seq}")
        for i, (a, b) in enumerate(zip(df[col], before if before is not None else [None] * len(df))):
            if pd.notna(a) and pd.notna(b) and a < b - max(MI_TOLERANCE, MI_TOLERANCE * b):
                flags[i].append(f"registration of {seq} lowered MI ({b:.3f} -> {a:.3f})")
    for col in [c for c in df.columns if c.endswith("_volume_ratio")]:
        for i, v in enumerate(df[col]):
            if pd.notna(v) and not 0.9 <= v <= 1.1:
                flags[i].append(f"{col[:-len('_volume_ratio')]} volume ratio {v:.3f} after moving")
    if len(df) >= MIN_FOR_ROBUST:
        cols = ["brain_volume_ml"] + [c for c in df.columns
                                      if c.startswith(("mi_after_", "p01_", "p50_", "p99_"))]
        for col in cols:
            x = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
            ok = np.isfinite(x)
            if ok.sum() < MIN_FOR_ROBUST:
                continue
            med = np.median(x[ok])
            mad = 1.4826 * np.median(np.abs(x[ok] - med))
            if not mad > 0:
                continue
            z = (x - med) / mad
            for i in np.flatnonzero(ok & (np.abs(z) > ROBUST_Z)):
                flags[i].append(f"{col} robust z {z[i]:+.1f}")
    df = df.copy()
    df["flags"] = ["; ".join(f) for f in flags]
    df["outlier"] = [bool(f) for f in flags]
    return df


def write_center_qc(preproc_jsons, out_tsv: str | Path, *, center: str | None = None):
    """Per-center QC TSV from the patients' ``<subject>_preproc.json`` files; returns the DataFrame.

    ``center`` (optional) keeps only that center's patients (the JSONs carry the center from ingest).
    """
    rows = []
    for p in preproc_jsons:
        meta = json.loads(Path(p).read_text())
        if center is None or str(meta.get("center", "")) == str(center):
            rows.append(qc_row(meta))
    df = pd.DataFrame(rows)
    if len(df):
        df = flag_outliers(df.sort_values("subject").reset_index(drop=True))
    else:
        df = pd.DataFrame(columns=["subject", "center", "flags", "outlier"])
    write_text(df.to_csv(sep="\t", index=False, float_format="%.5g"), out_tsv)
    return df
