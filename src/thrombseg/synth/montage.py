"""One QC montage PNG per center: a row per patient, a column per sequence.

matplotlib is imported when a montage is drawn, not with the module: the workflow imports
``thrombseg.synth`` to parse the Snakefile and should not pay for (or set the backend of) pyplot.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.io import atomic_path
from .centers import SEQUENCE_KEYS


def canonical_slice(data: np.ndarray, affine: np.ndarray, world_pt: np.ndarray) -> tuple:
    """Axial slice (RAS-canonical) through a world point: (slice, canonical affine, in-plane index)."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, np.float32), affine))
    d = np.asarray(img.dataobj, np.float32)
    ijk = np.linalg.inv(img.affine) @ np.append(world_pt, 1.0)
    k = int(np.clip(np.round(ijk[2]), 0, d.shape[2] - 1))
    return d[:, :, k].T.copy(), img.affine, (ijk[:2]).tolist()


def _window(a: np.ndarray, seq: str):
    if seq == "phase":
        lo, hi = np.percentile(a, [1, 99])
    else:
        nz = a[a > 0]
        lo, hi = (0.0, np.percentile(nz, 99.5)) if nz.size else (0.0, 1.0)
    return lo, hi if hi > lo else lo + 1


def write_montage(center: str, results: list[dict], path: Path) -> Path:
    """The center's montage: per patient the susceptibility image, a zoom on the thrombus, the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seqs = [s for s in SEQUENCE_KEYS if any(s in r["montage"]["panels"] for r in results)]
    cols = [seqs[0], "zoom"] + seqs[1:] if seqs else []
    n, m = len(results), len(cols)
    fig, axes = plt.subplots(n, m, figsize=(1.9 * m, 1.9 * n + 0.4), squeeze=False, facecolor="black")
    for i, r in enumerate(results):
        panels = r["montage"]["panels"]
        t = r["truth"]
        for j, col in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("black")
            seq = seqs[0] if col == "zoom" else col
            if seq not in panels:
                ax.text(0.5, 0.5, "missing", color="gray", ha="center", va="center", transform=ax.transAxes, fontsize=7)
                continue
            img, aff, (ci, cj) = panels[seq]
            lo, hi = _window(img, seq)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
            if col == "zoom":
                sp = np.sqrt((aff[:3, :3] ** 2).sum(0))
                hw, hh = 22.0 / sp[0], 22.0 / sp[1]
                ax.set_xlim(ci - hw, ci + hw)
                ax.set_ylim(cj - hh, cj + hh)
                mask = r["montage"]["thr_mask"]
                if mask.shape == img.shape and mask.any():
                    yy, xx = np.nonzero(mask)
                    tx, ty = float(xx.mean()), float(yy.mean())
                    # arrow towards the annotated thrombus (a contour would hide it)
                    ax.annotate("", xy=(tx - 2.5 / sp[0], ty - 2.5 / sp[1]), xytext=(tx - 12 / sp[0], ty - 12 / sp[1]),
                                arrowprops=dict(arrowstyle="->", color="red", lw=1.0))
            if i == 0:
                ax.set_title("zoom (arrow: mask)" if col == "zoom" else seq, color="white", fontsize=8)
            if j == 0:
                clot = (f"{t['vessel']} {t['thrombus_volume_mm3']:.0f}mm³" if t["thrombus_present"]
                        else f"no clot: {t['negative_kind']}")
                ax.set_ylabel(f"{t['subject']}\n{clot}" + ("\nlow-contrast" if t["low_contrast"] else ""),
                              color="white", fontsize=6)
    height = 1.9 * n + 0.4
    fig.text(0.5, 0.002, f"synthetic center {center}: susceptibility at the thrombus, diffusion/FLAIR at the "
             "infarct (neurological orientation: left on the left)", color="white", fontsize=7, ha="center",
             va="bottom")
    fig.tight_layout(pad=0.2, rect=(0, 0.2 / height, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, facecolor="black", metadata={"Software": None, "Creation Time": None})
    plt.close(fig)
    return Path(path)
