"""Hard-negative mining: where the model being trained sees a target that is not there.

A mining round predicts each training patient's whole volume with the current weights (eval mode,
no gradients, stacks without overlap) and labels the connected components of the probability map
at or above ``hard_negatives.threshold``. Components that touch the patient's target are hits; the
others are the patient's false positives (veins, vessels, microbleeds, artefacts). The most
confident ``max_per_case`` of them give the centres on which the dataset then draws a share of the
patient's negative stacks (:meth:`thrombseg.training.data.StackDataset.set_hard_negatives`).

Only training patients are mined: :func:`mine_false_positives` refuses a validation patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..core.case import Case
from ..evaluation.metrics import label_components
from ..inference.sliding import predict_volume
from .config import TrainConfig
from .modality_dropout import stage_index

MINING_OVERLAP = 0.0  # each slice predicted once: the cheapest pass that covers the volume
CONNECTIVITY = 26  # components as the evaluation counts them (evaluation.metrics.component_errors)


@dataclass
class MinedCase:
    """One patient's mining result: false-positive components found, and the centres kept."""

    subject: str
    n_false_positives: int
    centres: np.ndarray  # (k, 3) voxel (x, y, z), most confident first


def mining_epochs(cfg: TrainConfig) -> list[int]:
    """Epochs that start with a mining round: every ``every`` epochs, or (``every: null``) each epoch
    that starts a new dropout stage; never epoch 0 (an untrained model's mistakes teach nothing)."""
    hn = cfg.hard_negatives
    if not hn.enabled:
        return []
    if hn.every is not None:
        return list(range(int(hn.every), cfg.epochs, int(hn.every)))
    stages = [stage_index(e, cfg.epochs, cfg.dropout.boundaries) for e in range(cfg.epochs)]
    return [e for e in range(1, cfg.epochs) if stages[e] != stages[e - 1]]


def false_positive_centres(prob: np.ndarray, truth: np.ndarray | None, threshold: float,
                           max_keep: int) -> tuple[int, np.ndarray]:
    """(number of components of ``prob >= threshold`` that miss ``truth``, centres (k, 3) of the
    ``max_keep`` most confident of them: each one's voxel nearest its centroid)."""
    labels, n = label_components(prob >= threshold, CONNECTIVITY)
    hits = np.unique(labels[np.asarray(truth) > 0]) if truth is not None else np.zeros(0, labels.dtype)
    fp = np.setdiff1d(np.arange(1, n + 1), hits)
    if fp.size == 0:
        return 0, np.zeros((0, 3), np.int64)
    peaks = np.asarray(ndimage.maximum(prob, labels, fp))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[fp]
    keep = fp[np.lexsort((fp, -sizes, -peaks))[:max_keep]]  # by peak, then size, then label: deterministic
    boxes = ndimage.find_objects(labels)
    centres = np.zeros((len(keep), 3), np.int64)
    for k, lab in enumerate(keep):
        box = boxes[lab - 1]
        idx = np.argwhere(labels[box] == lab) + [b.start for b in box]
        # a voxel of the component, not its centroid: that may lie off a curved vessel
        centres[k] = idx[np.argmin(((idx - idx.mean(0)) ** 2).sum(1))]
    return int(fp.size), centres


def check_training_only(cases: list[Case], validation: list[Case]) -> None:
    """ValueError if a patient to mine is also a validation patient (by subject or by object)."""
    val_ids, val_subjects = {id(c) for c in validation}, {c.subject for c in validation}
    leaked = sorted({c.subject for c in cases if id(c) in val_ids or c.subject in val_subjects})
    if leaked:
        raise ValueError(f"hard-negative mining sees training patients only, but {', '.join(leaked)} "
                         "is also a validation patient (check the protocol's splits)")


@torch.no_grad()
def mine_false_positives(model: torch.nn.Module, cases: list[Case], cfg: TrainConfig, device,
                         validation: list[Case]) -> list[MinedCase]:
    """One mining round over the training patients ``cases`` (every sequence each one has)."""
    check_training_only(cases, validation)
    hn, mined = cfg.hard_negatives, []
    for case in cases:
        arrays, avail = case.inputs(cfg.modalities)
        if not avail.any():
            mined.append(MinedCase(case.subject, 0, np.zeros((0, 3), np.int64)))
            continue
        prob = predict_volume(model, arrays, avail, stack=cfg.stack, overlap=MINING_OVERLAP,
                              batch_size=cfg.batch_size, device=device)
        n, centres = false_positive_centres(prob, case.labels.get(cfg.target), hn.threshold, hn.max_per_case)
        mined.append(MinedCase(case.subject, n, centres))
    return mined
