"""Choose the post-processing settings on the validation patients (nnU-Net does it on its folds).

Thrombus sizes and a model's confidence depend on the grid, the cohort and how long the model
trained, so a fixed minimum component size that suits one run drops the true thrombus in another.
The thrombus and infarct models predict each validation patient once, with all its sequences;
every candidate of the grid then post-processes those maps, and the candidate with the best mean
detection, then the best mean Dice, wins. Ties keep the configured settings, so a grid that cannot
tell candidates apart changes nothing. The test patients are never looked at.

With ``tune: {selection: score}`` the tuning then fits the candidate scorer (:mod:`.candidates`) on
the components those maps give under the chosen settings (label: the component overlaps the true
thrombus), the validation patients predicted with all their sequences and with each one withheld,
and picks the presence threshold on those maps' out-of-fold presence probabilities, each map whose
thrombus was found counting also without it as a pseudo-negative (:func:`fit_candidate_scoring`); ``chosen`` then holds ``selection``, ``presence_threshold`` and
``scorer``, and ``candidate_scoring`` says on which patients and how.

Importing this module loads no torch: :mod:`.predict` (torch) is imported by the two functions that
run a network, :func:`_maps` (behind :func:`raw_maps` and :func:`subset_maps`) and :func:`tune_subjects`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.case import load_case
from ..core.io import write_text
from ..evaluation.metrics import evaluate_case
from ..plan import DEFAULT_TUNE_GRID, tune_grid
from .candidates import (
    FEATURES,
    candidate_table,
    case_frame,
    choose_presence_threshold,
    fit_scorer,
    out_of_fold_scores,
    patient_presence,
)
from .postprocess import case_midline, postprocess_case
from .sequences import case_sequences, sequence_subsets
from .settings import SELECTIONS, InferenceConfig, InferenceError

log = logging.getLogger("thrombseg.inference")

__all__ = ["TUNABLE", "candidates", "fit_candidate_scoring", "raw_maps", "score_maps", "tune_postprocessing",
           "tune_subjects", "write_tuning"]

TUNABLE = ("threshold", "min_size_voxels", "min_volume_mm3", "keep_within_mm", "proximity_mm",
           "same_side_mm", "regrow_threshold", "infarct_threshold")
SELECTION_KEY = "selection"  # in the tune grid: a switch (rule | score), not a list of candidates
# The scorer learns from each validation patient with all its sequences and with each one withheld, the
# sets the test rows are mostly made of: 6x the candidates of the full set alone, and a bounded cost
# (n + 1 maps per patient, where "all" would be 2^n - 1).
SCORER_SUBSETS = "leave-one-out"
FULL_SET = "all"  # the label of a patient's map with all its sequences (raw_maps)
CRITERION = "mean detection, then mean Dice; ties keep the configured value"


def candidates(icfg: InferenceConfig, grid: dict) -> list[dict]:
    """The configured settings first, then every combination of the grid's values."""
    untunable = sorted(set(grid) - set(TUNABLE))
    if untunable:
        raise InferenceError(f"inference.tune: cannot tune {untunable} (tunable: {', '.join(TUNABLE)})")
    out = [{k: getattr(icfg, k) for k in grid}]
    for values in itertools.product(*(list(v) for v in grid.values())):
        candidate = dict(zip(grid, values))
        if candidate not in out:
            dataclasses.replace(icfg, **candidate)  # validates the candidate (InferenceError)
            out.append(candidate)
    return out


def raw_maps(cases, thrombus, infarct, icfg: InferenceConfig | None = None, device="cpu") -> list[tuple]:
    """Predict each case once, with all its sequences and post-processing off, exactly as rule
    predict's full-set row: ``[(case, thrombus probability, infarct probability or None)]`` (the
    infarct is thresholded per candidate: ``infarct_threshold`` is tunable)."""
    return [m[:3] for m in _maps(cases, thrombus, infarct, icfg, device, full=True)]


def subset_maps(cases, thrombus, infarct, icfg: InferenceConfig | None = None, device="cpu") -> list[tuple]:
    """Like :func:`raw_maps` for each case's sequence subsets of :data:`SCORER_SUBSETS` other than the full
    set: ``[(case, thrombus probability, infarct probability or None, "seq+seq")]``."""
    return _maps(cases, thrombus, infarct, icfg, device, full=False)


def _maps(cases, thrombus, infarct, icfg, device, full: bool) -> list[tuple]:
    """Raw maps of each case's full set (``full``) or of its other :data:`SCORER_SUBSETS`."""
    from .predict import model_modalities, predict_case

    raw_cfg = dataclasses.replace(icfg or InferenceConfig(), postprocess=False)
    maps = []
    for case in cases:
        sets = sequence_subsets(case_sequences(case, model_modalities(thrombus)), SCORER_SUBSETS)
        for keep in sets[:1] if full else sets[1:]:
            result = predict_case(case, thrombus, infarct, raw_cfg, keep, device)
            maps.append((case, result["prob"], result["infarct_prob"], FULL_SET if full else "+".join(keep)))
    return maps


def infarct_mask(infarct_prob, icfg: InferenceConfig):
    """The infarct mask of a map of :func:`raw_maps` under ``icfg`` (None without an infarct model)."""
    return None if infarct_prob is None else infarct_prob >= icfg.infarct_threshold


def score_maps(maps, icfg: InferenceConfig) -> list[dict]:
    """Post-process every map of :func:`raw_maps` with ``icfg``; one metrics dict per case."""
    out = []
    for case, prob, infarct_prob in maps:
        mask, _ = postprocess_case(prob, infarct_mask(infarct_prob, icfg), case.spacing, icfg, case_midline(case),
                                   case_frame(case))
        out.append(evaluate_case(mask, np.asarray(case.labels["thrombus"]) > 0, case.spacing))
    return out


def tune_postprocessing(cases, thrombus, infarct, icfg: InferenceConfig | None = None, grid: dict | None = None,
                        device="cpu") -> dict:
    """Score every candidate on ``cases`` and return the choice with the whole table.

    Args:
        cases: validation cases (harmonized, with a thrombus label).
        thrombus, infarct: the models (``predict.LoadedModel``; the thrombus model may also be a
            ``predict.ProbabilityModel``); infarct may be None.
        icfg: the configured InferenceConfig (the tie-breaker).
        grid: ``{setting: [values]}``; default :data:`thrombseg.plan.DEFAULT_TUNE_GRID`. Its key
            ``selection: score`` also fits the candidate scorer (:func:`fit_candidate_scoring`).

    Returns:
        ``{"chosen": {...}, "candidates": [{...settings, "detection", "dice"}], "subjects": [...]}``,
        and ``candidate_scoring`` with ``selection: score``.
    """
    icfg = icfg or InferenceConfig()
    grid = dict(DEFAULT_TUNE_GRID if grid is None else grid)
    selection = grid.pop(SELECTION_KEY, "rule")
    if selection not in SELECTIONS:
        raise InferenceError(f"inference.tune.selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    settings = candidates(icfg, grid)
    cases = [c for c in cases if c.labels.get("thrombus") is not None]
    if not cases:
        raise InferenceError("post-processing tuning needs validation patients with a thrombus label")
    maps = raw_maps(cases, thrombus, infarct, icfg, device)
    table = []
    for candidate in settings:
        scores = score_maps(maps, dataclasses.replace(icfg, **candidate))
        table.append(candidate | {"detection": float(np.nanmean([m["detected"] for m in scores])),
                                  "dice": float(np.nanmean([m["dice"] for m in scores]))})
    best = 0
    for i, row in enumerate(table):  # strict '>' keeps the earlier (configured first) on ties
        if (row["detection"], row["dice"]) > (table[best]["detection"], table[best]["dice"]):
            best = i
    result = {"chosen": settings[best], "criterion": CRITERION, "candidates": table,
              "subjects": [c.subject for c, _, _ in maps]}
    if selection == "score":
        more = subset_maps(cases, thrombus, infarct, icfg, device)
        scoring = fit_candidate_scoring(maps, dataclasses.replace(icfg, **settings[best]), more)
        result["candidate_scoring"] = scoring["record"]
        result["chosen"] = settings[best] | scoring["chosen"]
    return result


def fit_candidate_scoring(maps, icfg: InferenceConfig, more=()) -> dict:
    """Fit the candidate scorer and the presence threshold on the validation maps of :func:`raw_maps`
    and ``more`` (the same patients' other sequence subsets, :func:`subset_maps`).

    The candidates are the components post-processing with ``icfg`` would choose from; each is labelled
    by whether it overlaps the patient's true thrombus. The threshold is chosen on out-of-fold presence
    probabilities of every map (a patient's maps are scored by a scorer fitted without any of them), then
    the scorer is refitted on every candidate. Without candidates of both kinds nothing can be fitted:
    the rule selection stays.

    Returns:
        ``{"chosen": settings to add (empty when not fitted), "record": what was fitted, on whom, how}``.
    """
    items = [(case, prob, infarct_prob, FULL_SET) for case, prob, infarct_prob in maps]
    items += list(more)
    subjects = list(dict.fromkeys(case.subject for case, _, _, _ in items))
    keys = [f"{case.subject}/{seqs}" for case, _, _, seqs in items]  # one map: a patient and a sequence set
    tables = []
    for (case, prob, infarct_prob, _), key in zip(items, keys):
        infarct = infarct_mask(infarct_prob, icfg)
        table = candidate_table(prob, case.spacing, infarct if infarct is not None and infarct.any() else None,
                                threshold=icfg.threshold, min_size_voxels=icfg.min_size_voxels,
                                min_volume_mm3=icfg.min_volume_mm3, midline=case_midline(case),
                                frame=case_frame(case), truth=np.asarray(case.labels["thrombus"]) > 0)
        tables.append(table.assign(subject=case.subject, map=key))
    table = pd.concat(tables, ignore_index=True)
    y = table["is_thrombus"].to_numpy(bool)
    truth = np.array([bool(np.asarray(case.labels["thrombus"]).any()) for case, _, _, _ in items])
    record = {"subjects": subjects, "n_maps": len(items), "subsets": SCORER_SUBSETS, "n_candidates": int(y.size),
              "n_thrombus_candidates": int(y.sum()),
              "n_positive_patients": len({c.subject for (c, *_), t in zip(items, truth) if t}),
              "n_negative_patients": len({c.subject for (c, *_), t in zip(items, truth) if not t})}
    if y.all() or not y.any():
        reason = (f"not fitted: {int(y.sum())} of {y.size} validation candidates overlap a thrombus; the scorer "
                  "needs both kinds, so the rule selection stays")
        return {"chosen": {}, "record": record | {"fitted": False, "reason": reason}}
    oof, how = out_of_fold_scores(table, y, table["subject"])
    presence = patient_presence(oof, table["map"], keys)
    # a map whose thrombus was found, without it: a pseudo-negative (choose_presence_threshold)
    found = np.isin(keys, table.loc[y, "map"])
    without = patient_presence(oof, table["map"], keys, keep=~y)
    choice = choose_presence_threshold(presence, truth, without[found])
    top = table.assign(score=oof).sort_values("score", ascending=False, kind="stable").groupby("map").head(1)
    top_hit = dict(zip(top["map"], top["is_thrombus"]))
    rows = [{"subject": case.subject, "sequences": seqs, "truth_present": bool(t), "presence_prob": float(p),
             "top_candidate_is_thrombus": bool(top_hit.get(k, False))}
            | ({"presence_prob_without_thrombus": float(w)} if f else {})
            for (case, _, _, seqs), k, t, p, f, w in zip(items, keys, truth, presence, found, without)]
    record |= {"fitted": True, "features": list(FEATURES), "threshold_scores": how} | choice | {"maps": rows}
    scorer = fit_scorer(table, y)
    return {"chosen": {"selection": "score", "presence_threshold": choice["threshold"], "scorer": scorer},
            "record": record}


def write_tuning(result: dict, path: str | Path) -> Path:
    """Write the tuning result atomically (rule predict reads ``chosen``)."""
    return write_text(json.dumps(result, indent=1), path)


def tune_subjects(harmonized_dir: str | Path, subjects: dict[str, str], thrombus_model,
                  infarct_model: str | Path | None, out_json: str | Path, section: dict | None = None) -> dict:
    """Tune on harmonized patients ``{subject: center}`` and write ``out_json``.

    ``thrombus_model``: a thrombseg ``model.pt`` or a ``predict.ProbabilityModel`` (nnU-Net baseline).

    ``section`` is the workflow's ``inference:`` section; its ``tune:`` grid (default
    :data:`thrombseg.plan.DEFAULT_TUNE_GRID`) lists the candidates, and ``tune.selection: score``
    fits the candidate scorer too. Only the patients of ``subjects`` are read.
    """
    from .predict import inference_device, inference_settings, load_checked, load_thrombus, model_source

    grid = tune_grid(section)
    icfg = inference_settings(section)
    device = inference_device(icfg.device)
    thrombus = load_thrombus(thrombus_model, device)
    infarct = load_checked(infarct_model, device, "infarct") if infarct_model else None
    cases = [load_case(Path(harmonized_dir) / s, s, c) for s, c in subjects.items()]
    result = tune_postprocessing(cases, thrombus, infarct, icfg, grid, device)
    result |= {"thrombus_model": model_source(thrombus_model), "infarct_model": str(infarct_model) if infarct_model else None}
    write_tuning(result, out_json)
    for row in result["candidates"]:
        log.info("candidate %s", row)
    log.info("chosen on %d validation patients %s: %s", len(result["subjects"]), result["subjects"],
             {k: v for k, v in result["chosen"].items() if k != "scorer"})
    scoring = result.get("candidate_scoring")
    if scoring is not None:  # a scorer that could not be fitted leaves the rule: say it loudly
        (log.info if scoring["fitted"] else log.warning)(
            "candidate scoring: %s", {k: v for k, v in scoring.items() if k != "maps"})
    return result
