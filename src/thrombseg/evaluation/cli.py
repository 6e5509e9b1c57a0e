"""``thrombseg evaluate`` / ``thrombseg aggregate`` (hooked into thrombseg.cli via :func:`add_subparsers`).

    thrombseg evaluate PRED_MASK TRUTH_MASK [--infarct-pred M --infarct-truth M] [--min-overlap N]
    thrombseg aggregate OUT_DIR METRICS_TSV... [--n-boot N] [--seed S]

``evaluate`` prints :func:`thrombseg.evaluation.metrics.evaluate_case` as JSON (NaN -> null); both
masks must hold only 0 and 1 (a probability map is refused, not thresholded) and lie on the same
grid (e.g. a ``thrombseg predict`` native-space mask and an annotation drawn on that input). ``aggregate`` gathers per-subject metric TSVs (``<subject>_metrics.tsv``) into
the per-center / per-sequence-set / per-experiment tables with bootstrap CIs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import UserError
from ..sheet import GRID_ATOL_MM, nonbinary_values, read_nifti3d
from .aggregate import write_tables
from .metrics import dice, evaluate_case


def _load_mask(path: Path, what: str):
    """(image, bool mask) of a 0/1 mask; a probability map or a label image is refused, not thresholded."""
    if not Path(path).is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        img, data = read_nifti3d(path)
    except ValueError as exc:
        raise UserError(f"{path}: {what}: {exc}") from None
    shown = nonbinary_values(data)
    if shown:
        raise UserError(f"{path}: {what} is not binary (values {shown}); give a 0/1 mask, not a probability "
                          "map (thrombseg predict writes both: *_mask.nii.gz and *_prob.nii.gz)")
    return img, data == 1


def load_pair(pred, truth, what: str = "thrombus"):
    """(pred, truth, spacing) of two masks that must share one grid (shape and affine)."""
    pi, p = _load_mask(pred, f"predicted {what} mask")
    ti, t = _load_mask(truth, f"reference {what} mask")
    if p.shape != t.shape or not np.allclose(pi.affine, ti.affine, atol=GRID_ATOL_MM):
        raise UserError(f"{pred}: predicted {what} mask is not on the grid of {truth} (shape {p.shape} vs "
                          f"{t.shape}; compare a native-space prediction with the mask of the same input)")
    return p, t, tuple(float(z) for z in ti.header.get_zooms()[:3])


def _clean(v):
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def _cmd_evaluate(args) -> int:
    if (args.infarct_pred is None) != (args.infarct_truth is None):
        raise UserError("give both --infarct-pred and --infarct-truth, or neither")
    p, t, spacing = load_pair(args.pred, args.truth)
    row = evaluate_case(p, t, spacing, min_overlap_voxels=args.min_overlap)
    if args.infarct_pred:
        # the infarct pair may lie on another grid (native space: DWI vs SWI), so it is scored on its own
        ip, it, _ = load_pair(args.infarct_pred, args.infarct_truth, "infarct")
        row["infarct_dice"] = dice(ip, it)
    print(json.dumps({k: _clean(v) for k, v in row.items()}, indent=1))
    return 0


def _cmd_aggregate(args) -> int:
    frames = []
    for f in args.metrics:
        if not Path(f).is_file():
            raise UserError(f"{f}: metrics table not found")
        try:
            frames.append(pd.read_csv(f, sep="\t"))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise UserError(f"{f}: not a readable metrics table ({str(exc).splitlines()[0]})") from None
    try:
        paths = write_tables(pd.concat(frames, ignore_index=True), args.out_dir, n_boot=args.n_boot, seed=args.seed)
    except ValueError as exc:  # missing id columns, duplicated rows: the message says which
        raise UserError(str(exc)) from None
    print("\n".join(f"wrote {p}" for p in paths.values()))
    return 0


def add_subparsers(subparsers) -> None:
    """Hook for :mod:`thrombseg.cli`."""
    s = subparsers.add_parser("evaluate", help="metrics of a predicted mask against a reference mask (JSON)")
    s.add_argument("pred", type=Path, help="predicted thrombus mask")
    s.add_argument("truth", type=Path, help="reference thrombus mask on the same grid")
    s.add_argument("--infarct-pred", type=Path)
    s.add_argument("--infarct-truth", type=Path)
    s.add_argument("--min-overlap", type=int, default=1, help="voxels of overlap for detected_min_overlap")
    s.set_defaults(func=_cmd_evaluate)

    s = subparsers.add_parser("aggregate", help="per-center / sequence-set / experiment tables from metric TSVs")
    s.add_argument("out_dir", type=Path)
    s.add_argument("metrics", nargs="+", type=Path, help="per-subject metric TSVs")
    s.add_argument("--n-boot", type=int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_aggregate)
