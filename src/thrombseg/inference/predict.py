"""Predict a harmonized patient with any subset of its sequences, post-process, evaluate.

The thrombus model sees only the sequences of the subset (others are marked absent, exactly as
at training time under modality dropout); the infarct model sees the subset's DWI/ADC/FLAIR. The
infarct prediction guides post-processing (keep the thrombus component nearest the infarct).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..core.fs import check_id
from ..evaluation.metrics import evaluate_case
from ..core.case import Case, load_case
from ..core.sequences import FALLBACK
from .postprocess import postprocess_thrombus
from .sliding import predict_volume

log = logging.getLogger("thrombseg.inference")


@dataclass
class InferenceConfig:
    """Options of prediction and lesion-guided post-processing."""

    threshold: float = 0.5
    overlap: float = 0.5
    tta_flip: bool = False
    batch_size: int = 4
    min_size_voxels: int = 20
    min_volume_mm3: float | None = None
    keep_within_mm: float | None = None
    proximity_mm: float | None = None  # None: keep the component nearest the infarct (see postprocess)
    same_side_mm: float | None = None  # None: components on either side of the midline are candidates
    regrow_threshold: float = 0.3
    postprocess: bool = True
    infarct_threshold: float = 0.5
    subsets: str | list = "all"  # all | leave-one-out | full | list of lists (see sequence_subsets)
    device: str = "auto"

    def __post_init__(self):
        # Checked here, before any preprocessing or model runs, instead of deep inside post-processing.
        bad = []
        for name in ("threshold", "regrow_threshold", "infarct_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                bad.append(f"{name} must be a number in (0, 1], got {v!r}")
        if not bad and self.postprocess and self.regrow_threshold > self.threshold:
            bad.append(f"regrow_threshold ({self.regrow_threshold}) must not exceed threshold ({self.threshold})")
        if not isinstance(self.overlap, (int, float)) or not 0 <= self.overlap < 1:
            bad.append(f"overlap must be in [0, 1), got {self.overlap!r}")
        for name in ("batch_size",):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad.append(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("min_size_voxels", "min_volume_mm3", "keep_within_mm", "proximity_mm", "same_side_mm"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                bad.append(f"{name} must be >= 0, got {v!r}")
        if bad:
            raise InferenceError("inference settings: " + "; ".join(bad))

    @classmethod
    def from_dict(cls, d: dict | None) -> "InferenceConfig":
        unknown = sorted(set(d or {}) - set(cls.__dataclass_fields__))
        if unknown:
            raise InferenceError(f"inference settings: unknown key(s) {unknown} "
                                 f"(known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**(d or {}))


class InferenceError(ValueError):
    """A patient or model that cannot be predicted; the message says why."""


def inference_device(name: str):
    """torch device for ``name`` (auto | cpu | cuda); a requested but absent GPU is an InferenceError."""
    from ..models.checkpoint import resolve_device

    try:
        return resolve_device(name)
    except RuntimeError as exc:
        raise InferenceError(str(exc)) from None


def load_checked(path, device, what: str = "thrombus"):
    """(model, ModelSpec) from a model file; a missing or unreadable file is an InferenceError."""
    from ..models.checkpoint import CheckpointError
    from ..models.checkpoint import load_model

    p = Path(path)
    if not p.is_file():
        raise InferenceError(f"{p}: {what} model file not found")
    try:
        return load_model(p, device)
    except CheckpointError as exc:
        raise InferenceError(f"{exc} (given as the {what} model)") from None
    except Exception as exc:  # torch/pickle raise many types for a wrong or truncated file
        raise InferenceError(f"{p}: not a readable thrombseg {what} model ({type(exc).__name__}: {exc})") from None


def case_sequences(case: Case, modalities: list[str]) -> list[str]:
    """The case's sequences that feed one of the model's channels (directly or as fallback)."""
    feeds = {m: (m, *FALLBACK.get(m, ())) for m in modalities}
    return sorted({s for m, names in feeds.items() for s in names if s in case.images})


def sequence_subsets(available: list[str], subsets="all") -> list[tuple[str, ...]]:
    """Sequence subsets to predict with, largest first.

    ``subsets`` is ``"all"`` (every non-empty subset: the full missing-sequence table),
    ``"leave-one-out"`` (the full set and each set missing one sequence: cheap on a CPU),
    ``"full"`` (only the full set), or a list of sequence lists (those the case has).
    """
    full = tuple(sorted(available))
    if subsets == "all":
        return [c for r in range(len(full), 0, -1) for c in itertools.combinations(full, r)]
    if subsets == "leave-one-out":
        return [full] + ([tuple(s for s in full if s != d) for d in full] if len(full) > 1 else [])
    if subsets == "full":
        return [full]
    if isinstance(subsets, str):
        raise InferenceError(f"inference.subsets: unknown value {subsets!r} "
                             "(all | leave-one-out | full | a list of sequence lists)")
    return [tuple(sorted(s)) for s in subsets if s and set(s) <= set(available)]


def subset_name(subset) -> str:
    return "+".join(sorted(subset))


def predict_probabilities(model, model_cfg, case: Case, keep: tuple[str, ...], icfg: InferenceConfig, device):
    """Probability map (x, y, z) from the sequences in ``keep`` only."""
    drop = tuple(s for s in case.images if s not in keep)
    arrays, avail = case.inputs(model_cfg.modalities, drop=drop)
    if not avail.any():
        raise InferenceError(f"{case.subject}: none of the sequences {sorted(keep)} is known to the model "
                             f"(it knows {model_cfg.modalities})")
    return predict_volume(model, arrays, avail, stack=model_cfg.stack, overlap=icfg.overlap,
                          batch_size=icfg.batch_size, device=device, tta_flip=icfg.tta_flip)


def predict_case(case: Case, thrombus, infarct=None, icfg: InferenceConfig | None = None,
                 keep: tuple[str, ...] | None = None, device="cpu") -> dict:
    """Predict one case with the sequences ``keep`` (default: all it has).

    Args:
        thrombus: (model, TrainConfig) of the thrombus model.
        infarct: (model, TrainConfig) of the infarct model, or None (post-processing then keeps
            the most confident component).

    Returns:
        dict with ``prob``, ``raw`` (thresholded), ``mask`` (post-processed), ``infarct`` (or None),
        ``info`` (post-processing details).
    """
    icfg = icfg or InferenceConfig()
    keep = tuple(keep or case.images)
    model, mcfg = thrombus
    prob = predict_probabilities(model, mcfg, case, keep, icfg, device)
    infarct_mask = None
    if infarct is not None:
        imodel, icfg_model = infarct
        if any(s in keep for s in icfg_model.modalities):
            iprob = predict_probabilities(imodel, icfg_model, case, keep, icfg, device)
            infarct_mask = iprob >= icfg.infarct_threshold
    mask, info = postprocess_case(prob, infarct_mask, case.spacing, icfg, case_midline(case))
    return {"prob": prob, "raw": prob >= icfg.threshold, "mask": mask, "infarct": infarct_mask, "info": info}


def case_midline(case: Case) -> tuple[int, float] | None:
    """``(left-right array axis, index of the mid-sagittal plane)`` of a harmonized case, or None.

    The axis comes from the grid's affine; the plane is the brain mask's centroid on it (the
    middle of the array without a mask). Oblique axial slabs are tilted about the left-right axis,
    which leaves the plane where it is; a head turned by 5 degrees moves it by about 5 mm at the
    front and back of the brain, half the same-side rule's 10 mm margin.
    """
    if case.affine is None:
        return None
    axis = int(np.argmax(np.abs(np.asarray(case.affine)[0, :3])))
    n = case.shape[axis]
    profile = None
    if case.brain is not None:
        other = tuple(a for a in range(3) if a != axis)
        profile = np.asarray(case.brain, bool).sum(axis=other).astype(float)
    if profile is None or profile.sum() == 0:
        return axis, (n - 1) / 2
    return axis, float((profile * np.arange(n)).sum() / profile.sum())


def postprocess_case(prob, infarct_mask, spacing, icfg: InferenceConfig,
                     midline: tuple[int, float] | None = None) -> tuple[np.ndarray, dict]:
    """Lesion-guided post-processing with the settings of ``icfg`` (or plain thresholding).

    ``midline`` (see :func:`case_midline`) enables ``icfg.same_side_mm``.
    """
    if not icfg.postprocess:
        return (prob >= icfg.threshold).astype(np.uint8), {}
    return postprocess_thrombus(
        prob, spacing, infarct_mask if infarct_mask is not None and infarct_mask.any() else None,
        threshold=icfg.threshold, min_size_voxels=icfg.min_size_voxels, min_volume_mm3=icfg.min_volume_mm3,
        keep_within_mm=icfg.keep_within_mm, proximity_mm=icfg.proximity_mm, same_side_mm=icfg.same_side_mm,
        midline=midline, regrow_threshold=icfg.regrow_threshold)


def inference_settings(section: dict | None, tuned: str | Path | None = None, **overrides) -> InferenceConfig:
    """InferenceConfig from the workflow's ``inference:`` section, with the settings chosen on the
    validation patients (``postprocess.json`` of rule tune_postprocess) when given, then ``overrides``."""
    d = {k: v for k, v in (section or {}).items() if k != "tune"}
    if tuned is not None:
        p = Path(tuned)
        try:
            chosen = json.loads(p.read_text())["chosen"]
            if not isinstance(chosen, dict):
                raise TypeError("'chosen' is not a mapping")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InferenceError(f"{p}: not a post-processing tuning file ({type(exc).__name__}: {exc})") from None
        d |= chosen
    return InferenceConfig.from_dict(d | overrides)


def _save_nifti(arr, affine, path: Path, dtype) -> None:
    img = nib.Nifti1Image(np.asarray(arr, dtype=dtype), affine)
    img.set_sform(affine, 1)
    img.set_qform(affine, 1)
    tmp = path.with_name(".tmp." + path.name)
    nib.save(img, tmp)
    os.replace(tmp, path)


def predict_subject(harmonized_dir: str | Path, subject: str, center: str, thrombus_model: str | Path,
                    infarct_model: str | Path | None, out_dir: str | Path, experiment: str = "",
                    icfg: InferenceConfig | None = None) -> pd.DataFrame:
    """Predict one harmonized patient with every sequence subset; write masks and a metrics table.

    Writes into ``out_dir``: ``<subject>_thrombus_prob.nii.gz``, ``<subject>_thrombus_mask.nii.gz``,
    ``<subject>_infarct_mask.nii.gz`` (all sequences, on the harmonized grid) and
    ``<subject>_metrics.tsv`` (one row per sequence subset, before and after post-processing).
    """
    import torch

    subject = check_id(subject)  # it names the output files
    icfg = icfg or InferenceConfig()
    device = inference_device(icfg.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(harmonized_dir) / subject
    case = load_case(folder, subject, center)
    thr = load_checked(thrombus_model, device, "thrombus")
    inf = load_checked(infarct_model, device, "infarct") if infarct_model else None
    seqs = case_sequences(case, thr[1].modalities)
    if not seqs:
        raise InferenceError(f"{subject}: none of its sequences {sorted(case.images)} is known to the model "
                             f"{thrombus_model} (it knows {thr[1].modalities})")
    truth = case.labels.get("thrombus")
    true_inf = case.labels.get("lesion")
    rows = []
    with torch.inference_mode():
        for keep in sequence_subsets(seqs, icfg.subsets):
            res = predict_case(case, thr, inf, icfg, keep, device)
            row = {"subject": subject, "center": center, "experiment": experiment,
                   "sequence_set": subset_name(keep), "n_sequences": len(keep)}
            if truth is not None:
                m = evaluate_case(res["mask"], np.asarray(truth) > 0, case.spacing,
                                  res["infarct"] if true_inf is not None and res["infarct"] is not None else None,
                                  np.asarray(true_inf) > 0 if true_inf is not None and res["infarct"] is not None else None)
                raw = evaluate_case(res["raw"], np.asarray(truth) > 0, case.spacing)
                row |= m | {f"raw_{k}": raw[k] for k in ("dice", "detected", "n_fp_components", "fp_volume_mm3")}
                row["true_volume_mm3"] = float((np.asarray(truth) > 0).sum() * np.prod(case.spacing))
            rows.append(row)
            if len(keep) == len(seqs):
                aff = case.affine if case.affine is not None else np.eye(4)
                _save_nifti(res["prob"], aff, out_dir / f"{subject}_thrombus_prob.nii.gz", np.float32)
                _save_nifti(res["mask"], aff, out_dir / f"{subject}_thrombus_mask.nii.gz", np.uint8)
                if res["infarct"] is not None:
                    _save_nifti(res["infarct"], aff, out_dir / f"{subject}_infarct_mask.nii.gz", np.uint8)
            log.info("%s %s: %s", subject, subset_name(keep),
                     {k: row[k] for k in ("dice", "detected") if k in row})
    df = pd.DataFrame(rows)
    tmp = out_dir / f".{subject}_metrics.tsv.tmp"
    df.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, out_dir / f"{subject}_metrics.tsv")
    return df
