"""Choose the post-processing settings on the validation patients (nnU-Net does it on its folds).

Thrombus sizes and a model's confidence depend on the grid, the cohort and how long the model
trained, so a fixed minimum component size that suits one run drops the true thrombus in another.
The thrombus and infarct models predict each validation patient once, with all its sequences;
every candidate of the grid then post-processes those maps, and the candidate with the best mean
detection, then the best mean Dice, wins. Ties keep the configured settings, so a grid that cannot
tell candidates apart changes nothing. The test patients are never looked at.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path

import numpy as np

from ..plan import DEFAULT_TUNE_GRID, tune_grid

__all__ = ["TUNABLE", "candidates", "raw_maps", "score_maps", "tune_postprocessing",
           "tune_subjects", "write_tuning"]

TUNABLE = ("threshold", "min_size_voxels", "min_volume_mm3", "keep_within_mm", "proximity_mm",
           "same_side_mm", "regrow_threshold", "infarct_threshold")


def candidates(icfg, grid: dict) -> list[dict]:
    """The configured settings first, then every combination of the grid's values."""
    from .predict import InferenceError

    bad = sorted(set(grid) - set(TUNABLE))
    if bad:
        raise InferenceError(f"inference.tune: cannot tune {bad} (tunable: {', '.join(TUNABLE)})")
    base = {k: getattr(icfg, k) for k in grid}
    out = [base]
    for values in itertools.product(*(list(v) for v in grid.values())):
        cand = dict(zip(grid, values))
        if cand not in out:
            dataclasses.replace(icfg, **cand)  # validates the candidate (InferenceError)
            out.append(cand)
    return out


def raw_maps(cases, thrombus, infarct, icfg=None, device="cpu") -> list[tuple]:
    """Predict each case once, with all its sequences and post-processing off, exactly as rule
    predict's full-set row: ``[(case, thrombus probability, infarct mask or None)]``."""
    import torch

    from .predict import InferenceConfig, case_sequences, predict_case

    raw_cfg = dataclasses.replace(icfg or InferenceConfig(), postprocess=False)
    maps = []
    with torch.inference_mode():
        for case in cases:
            res = predict_case(case, thrombus, infarct, raw_cfg, tuple(case_sequences(case, thrombus[1].modalities)),
                               device)
            maps.append((case, res["prob"], res["infarct"]))
    return maps


def score_maps(maps, icfg) -> list[dict]:
    """Post-process every map of :func:`raw_maps` with ``icfg``; one metrics dict per case."""
    from ..evaluation.metrics import evaluate_case
    from .predict import case_midline, postprocess_case

    out = []
    for case, prob, inf in maps:
        mask, _ = postprocess_case(prob, inf, case.spacing, icfg, case_midline(case))
        out.append(evaluate_case(mask, np.asarray(case.labels["thrombus"]) > 0, case.spacing))
    return out


def tune_postprocessing(cases, thrombus, infarct, icfg=None, grid: dict | None = None, device="cpu") -> dict:
    """Score every candidate on ``cases`` and return the choice with the whole table.

    Args:
        cases: validation cases (harmonized, with a thrombus label).
        thrombus, infarct: (model, TrainConfig) pairs; infarct may be None.
        icfg: the configured InferenceConfig (the tie-breaker).
        grid: ``{setting: [values]}``; default :data:`thrombseg.plan.DEFAULT_TUNE_GRID`.

    Returns:
        ``{"chosen": {...}, "candidates": [{...settings, "detection", "dice"}], "subjects": [...]}``.
    """
    from .predict import InferenceConfig, InferenceError

    icfg = icfg or InferenceConfig()
    cands = candidates(icfg, DEFAULT_TUNE_GRID if grid is None else grid)
    cases = [c for c in cases if c.labels.get("thrombus") is not None]
    if not cases:
        raise InferenceError("post-processing tuning needs validation patients with a thrombus label")
    maps = raw_maps(cases, thrombus, infarct, icfg, device)
    table = []
    for cand in cands:
        ms = score_maps(maps, dataclasses.replace(icfg, **cand))
        table.append(cand | {"detection": float(np.nanmean([m["detected"] for m in ms])),
                             "dice": float(np.nanmean([m["dice"] for m in ms]))})
    best = 0
    for i, row in enumerate(table):  # strict '>' keeps the earlier (configured first) on ties
        if (row["detection"], row["dice"]) > (table[best]["detection"], table[best]["dice"]):
            best = i
    return {"chosen": cands[best], "criterion": "mean detection, then mean Dice; ties keep the configured value",
            "candidates": table, "subjects": [c.subject for c, _, _ in maps]}


def write_tuning(result: dict, path: str | Path) -> Path:
    """Write the tuning result atomically (rule predict reads ``chosen``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return path


def tune_subjects(harmonized_dir: str | Path, subjects: dict[str, str], thrombus_model: str | Path,
                  infarct_model: str | Path | None, out_json: str | Path, section: dict | None = None) -> dict:
    """Tune on harmonized patients ``{subject: center}`` and write ``out_json``.

    ``section`` is the workflow's ``inference:`` section; its ``tune:`` grid (default
    :data:`thrombseg.plan.DEFAULT_TUNE_GRID`) lists the candidates.
    """
    from ..core.case import load_case
    from .predict import inference_device, inference_settings, load_checked

    grid = tune_grid(section)
    icfg = inference_settings(section)
    device = inference_device(icfg.device)
    thr = load_checked(thrombus_model, device, "thrombus")
    inf = load_checked(infarct_model, device, "infarct") if infarct_model else None
    cases = [load_case(Path(harmonized_dir) / s, s, c) for s, c in subjects.items()]
    result = tune_postprocessing(cases, thr, inf, icfg, grid, device)
    result |= {"thrombus_model": str(thrombus_model), "infarct_model": str(infarct_model) if infarct_model else None}
    write_tuning(result, out_json)
    return result
