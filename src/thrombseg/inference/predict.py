"""Predict a harmonized patient with any subset of its sequences, post-process, evaluate.

The thrombus model sees only the sequences of the subset (others are marked absent, exactly as
at training time under modality dropout); the infarct model sees the subset's DWI/ADC/FLAIR. The
infarct prediction guides post-processing (keep the thrombus component nearest the infarct).

The thrombus model is a thrombseg network (:class:`LoadedModel`) or any other model given as a
:class:`ProbabilityModel` (the nnU-Net baseline: ``thrombseg.baselines.nnunet.workflow``), whose
probability maps then go through the same post-processing, metrics and tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from ..core.case import Case, load_case
from ..core.fs import check_id
from ..core.io import write_array_nifti, write_json, write_table
from ..evaluation.metrics import evaluate_case
from ..models.checkpoint import CheckpointError, ModelSpec, load_model, resolve_device
from ..preprocessing.ood import harmonized_record
from .candidates import case_frame, check_scorer
from .postprocess import case_midline, postprocess_case
from .sequences import case_sequences, sequence_subsets, subset_name
from .settings import InferenceConfig, InferenceError, read_tuned
from .sliding import predict_volume

log = logging.getLogger("thrombseg.inference")

RAW_METRICS = ("dice", "detected", "n_fp_components", "fp_volume_mm3")  # also reported before post-processing


class LoadedModel(NamedTuple):
    """A network ready to predict and the spec it was trained with (channels, stack, target)."""

    network: torch.nn.Module
    spec: ModelSpec


class ProbabilityModel(NamedTuple):
    """A thrombus model from outside thrombseg: its channels, and a function giving a case's thrombus
    probability (float, ``case.shape``) from the sequences of a subset only (``keep``)."""

    modalities: tuple[str, ...]
    probability: Callable[[Case, tuple[str, ...]], np.ndarray]
    source: str = ""  # the file it was loaded from (recorded by the tuning)


def model_modalities(model: LoadedModel | ProbabilityModel) -> list[str]:
    """The channels (sequences) a thrombus model takes."""
    return list(model.modalities if isinstance(model, ProbabilityModel) else model.spec.modalities)


def inference_settings(section: dict | None, tuned: str | Path | None = None, **overrides) -> InferenceConfig:
    """InferenceConfig from the workflow's ``inference:`` section, with the settings chosen on the
    validation patients (``postprocess.json`` of rule tune_postprocess) when given, then ``overrides``."""
    settings = {k: v for k, v in (section or {}).items() if k != "tune"}
    if tuned is not None:
        settings |= read_tuned(tuned)
    icfg = InferenceConfig.from_dict(settings | overrides)
    if icfg.scorer is not None:
        check_scorer(icfg.scorer)  # a damaged postprocess.json fails here, before any model runs
    return icfg


def inference_device(name: str) -> torch.device:
    """torch device for ``name`` (auto | cpu | cuda); a requested but absent GPU is an InferenceError."""
    try:
        return resolve_device(name)
    except RuntimeError as exc:
        raise InferenceError(str(exc)) from None


def load_checked(path, device, what: str = "thrombus") -> LoadedModel:
    """The model of a model file; a missing or unreadable file is an InferenceError."""
    p = Path(path)
    if not p.is_file():
        raise InferenceError(f"{p}: {what} model file not found")
    try:
        return LoadedModel(*load_model(p, device))
    except CheckpointError as exc:
        raise InferenceError(f"{exc} (given as the {what} model)") from None
    except Exception as exc:  # torch/pickle raise many types for a wrong or truncated file
        raise InferenceError(f"{p}: not a readable thrombseg {what} model ({type(exc).__name__}: {exc})") from None


def load_thrombus(model: str | Path | LoadedModel | ProbabilityModel, device) -> LoadedModel | ProbabilityModel:
    """A model already loaded as given, else the thrombseg model of a file (:func:`load_checked`)."""
    return model if isinstance(model, (LoadedModel, ProbabilityModel)) else load_checked(model, device, "thrombus")


def model_source(model: str | Path | ProbabilityModel | None) -> str | None:
    """The file a thrombus model came from, as text (None for none)."""
    if model is None:
        return None
    if isinstance(model, LoadedModel):
        return "a model loaded by the caller"
    return model.source if isinstance(model, ProbabilityModel) else str(model)


def predict_probabilities(model: LoadedModel | ProbabilityModel, case: Case, keep: tuple[str, ...],
                          icfg: InferenceConfig, device):
    """Probability map (x, y, z) from the sequences in ``keep`` only."""
    drop = tuple(s for s in case.images if s not in keep)
    arrays, available = case.inputs(model_modalities(model), drop=drop)
    if not available.any():
        raise InferenceError(f"{case.subject}: none of the sequences {sorted(keep)} is known to the model "
                             f"(it knows {model_modalities(model)})")
    if isinstance(model, ProbabilityModel):
        prob = np.asarray(model.probability(case, tuple(keep)), np.float32)
        if prob.shape != tuple(case.shape):
            raise InferenceError(f"{case.subject}: the thrombus model returned shape {prob.shape}, "
                                 f"the case is {tuple(case.shape)}")
        return prob
    return predict_volume(model.network, arrays, available, stack=model.spec.stack, overlap=icfg.overlap,
                          batch_size=icfg.batch_size, device=device, tta_flip=icfg.tta_flip)


@torch.inference_mode()
def predict_case(case: Case, thrombus: LoadedModel, infarct: LoadedModel | None = None,
                 icfg: InferenceConfig | None = None, keep: tuple[str, ...] | None = None, device="cpu") -> dict:
    """Predict one case with the sequences ``keep`` (default: all it has).

    Args:
        thrombus: the thrombus model (:class:`LoadedModel` or :class:`ProbabilityModel`).
        infarct: the infarct model, or None (post-processing then keeps the most confident component).

    Returns:
        dict with ``prob``, ``raw`` (thresholded), ``mask`` (post-processed), ``infarct`` (or None) and
        ``infarct_prob`` (its probability, or None),
        ``info`` (post-processing details), ``presence_prob`` (the probability that the patient has a
        thrombus, with ``selection: score``; None otherwise).
    """
    icfg = icfg or InferenceConfig()
    keep = tuple(keep or case.images)
    prob = predict_probabilities(thrombus, case, keep, icfg, device)
    infarct_prob = infarct_mask = None
    if infarct is not None and any(s in keep for s in infarct.spec.modalities):
        infarct_prob = predict_probabilities(infarct, case, keep, icfg, device)
        infarct_mask = infarct_prob >= icfg.infarct_threshold
    mask, info = postprocess_case(prob, infarct_mask, case.spacing, icfg, case_midline(case), case_frame(case))
    return {"prob": prob, "raw": prob >= icfg.threshold, "mask": mask, "infarct": infarct_mask,
            "infarct_prob": infarct_prob, "info": info, "presence_prob": info.get("presence_prob")}


def predict_subject(harmonized_dir: str | Path, subject: str, center: str,
                    thrombus_model: str | Path | LoadedModel | ProbabilityModel, infarct_model: str | Path | None,
                    out_dir: str | Path, experiment: str = "", icfg: InferenceConfig | None = None) -> pd.DataFrame:
    """Predict one harmonized patient with every sequence subset; write masks and a metrics table.

    ``thrombus_model``: a thrombseg ``model.pt`` (or that model loaded, to load it once for many
    patients), or a :class:`ProbabilityModel` (another model's maps get the same post-processing,
    metrics and files).

    Writes into ``out_dir``: ``<subject>_thrombus_prob.nii.gz``, ``<subject>_thrombus_mask.nii.gz``,
    ``<subject>_infarct_mask.nii.gz`` (all sequences, on the harmonized grid),
    ``<subject>_metrics.tsv`` (one row per sequence subset, before and after post-processing) and
    ``<subject>_ood.json`` (how the inputs compare with the training profile, recorded by harmonization).
    """
    subject = check_id(subject)  # it names the output files
    icfg = icfg or InferenceConfig()
    device = inference_device(icfg.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    case = load_case(Path(harmonized_dir) / subject, subject, center)
    thrombus = load_thrombus(thrombus_model, device)
    infarct = load_checked(infarct_model, device, "infarct") if infarct_model else None
    sequences = case_sequences(case, model_modalities(thrombus))
    if not sequences:
        raise InferenceError(f"{subject}: none of its sequences {sorted(case.images)} is known to the model "
                             f"{model_source(thrombus_model)} (it knows {model_modalities(thrombus)})")
    write_ood(Path(harmonized_dir) / subject, subject, out_dir)
    rows = []
    for keep in sequence_subsets(sequences, icfg.subsets):
        result = predict_case(case, thrombus, infarct, icfg, keep, device)
        rows.append({"subject": subject, "center": center, "experiment": experiment,
                     "sequence_set": subset_name(keep), "n_sequences": len(keep)} | subset_metrics(case, result))
        if len(keep) == len(sequences):
            write_grid_masks(case, result, out_dir)
        log.info("%s %s: %s", subject, subset_name(keep), {k: rows[-1][k] for k in ("dice", "detected") if k in rows[-1]})
    table = pd.DataFrame(rows)
    write_table(table, out_dir / f"{subject}_metrics.tsv")
    return table


def write_ood(case_dir: Path, subject: str, out_dir: Path) -> dict:
    """Log and write ``<subject>_ood.json``: the out-of-distribution record harmonization left in the case."""
    record = harmonized_record(case_dir, subject)
    for line in record["warnings"]:
        log.warning("%s: out of distribution: %s", subject, line)
    summary = {"subject": subject, "out_of_distribution": record["out_of_distribution"],
               "ood_warnings": record["warnings"], "note": record["note"]}
    write_json(summary, out_dir / f"{subject}_ood.json")
    return summary


def subset_metrics(case: Case, result: dict) -> dict:
    """Metrics of one subset's prediction against the case's labels, before (``raw_``) and after
    post-processing; empty without a thrombus label."""
    truth = case.labels.get("thrombus")
    if truth is None:
        return {}
    true_thrombus = np.asarray(truth) > 0
    true_infarct = case.labels.get("infarct")
    infarct_pair = ((result["infarct"], np.asarray(true_infarct) > 0)
                    if true_infarct is not None and result["infarct"] is not None else (None, None))
    after = evaluate_case(result["mask"], true_thrombus, case.spacing, *infarct_pair,
                          presence_prob=result.get("presence_prob"))
    before = evaluate_case(result["raw"], true_thrombus, case.spacing)
    return after | {f"raw_{k}": before[k] for k in RAW_METRICS} | {
        "true_volume_mm3": float(true_thrombus.sum() * np.prod(case.spacing))}


def write_grid_masks(case: Case, result: dict, out_dir: Path) -> None:
    """The probability map and masks of one prediction, on the harmonized grid."""
    affine = case.affine if case.affine is not None else np.eye(4)
    write_array_nifti(result["prob"], affine, out_dir / f"{case.subject}_thrombus_prob.nii.gz", np.float32)
    write_array_nifti(result["mask"], affine, out_dir / f"{case.subject}_thrombus_mask.nii.gz", np.uint8)
    if result["infarct"] is not None:
        write_array_nifti(result["infarct"], affine, out_dir / f"{case.subject}_infarct_mask.nii.gz", np.uint8)
