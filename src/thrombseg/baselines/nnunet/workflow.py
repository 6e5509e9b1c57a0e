"""The nnU-Net baseline's steps as the workflow runs them (``workflow/rules/nnunet.smk``).

An experiment with ``model: nnunet`` (``thrombseg.plan.nnunet_settings``) goes through:

1. :func:`export_experiment`: its protocol's **training** patients, harmonized with the protocol's
   landmarks, as nnU-Net raw dataset ``DatasetXXX_<experiment>`` (one dataset per experiment);
2. nnU-Net's planner and preprocessing (``commands.plan_and_preprocess``);
3. :func:`train_experiment`: nnU-Net's training on fold ``all`` (every exported patient; nnU-Net's own
   validation then looks at those same patients and selects nothing: the final checkpoint is used),
   with the budget trainer or, when the experiment gives a dropout schedule, the GMD trainer; it
   resumes (``--c``) a run of the same patients and records them in ``subjects.json`` for the audit;
4. :func:`probability_model`: the trained model as an ``inference.predict.ProbabilityModel``, which
   ``inference.predict.predict_subject`` and ``inference.tune.tune_subjects`` take in place of a
   thrombseg network, so that thrombseg's lesion-guided post-processing, its post-processing tuning on
   the protocol's validation patients, its metrics and its tables are the same for both.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...core.errors import UserError
from ...core.io import write_json
from ...core.layout import SUBJECTS_RECORD, Layout
from ...inference.predict import ProbabilityModel
from .commands import train
from .dataset import export_dataset
from .environment import DROPOUT_VAR, EPOCHS_VAR, ITERS_VAR, SEED_VAR, VAL_ITERS_VAR, nnunet_dirs

log = logging.getLogger("thrombseg.baselines.nnunet")

# plan.nnunet_settings' budget keys -> the trainers' variables
BUDGET_VARS = {"epochs": EPOCHS_VAR, "iterations": ITERS_VAR, "val_iterations": VAL_ITERS_VAR, "seed": SEED_VAR}


def budget_variables(settings: Mapping) -> dict[str, str]:
    """The trainer's variables of an experiment's settings (``plan.nnunet_settings``): its budget, and
    its dropout config as JSON for the GMD trainer."""
    out = {BUDGET_VARS[k]: str(v) for k, v in (settings.get("budget") or {}).items()}
    if settings.get("dropout") is not None:
        out[DROPOUT_VAR] = json.dumps(settings["dropout"], sort_keys=True)
    return out


def check_dataset_id(results_root: str | Path, dataset_id: int, dataset: str) -> None:
    """UserError when another dataset folder of nnU-Net's holds the same id (nnU-Net would refuse the
    id as ambiguous): a left-over of an experiment renamed or given another ``dataset_id``."""
    prefix = f"{Layout.nnunet_dataset(dataset_id, '')}"
    clashes = sorted(str(p) for d in nnunet_dirs(results_root).values() if d.is_dir()
                     for p in d.glob(f"{prefix}*") if p.name != dataset)
    if clashes:
        raise UserError(f"nnU-Net dataset id {dataset_id} of {dataset} is also held by {', '.join(clashes)}: "
                        "remove those folders, or give the experiment another dataset_id")


def export_experiment(harmonized_root: str | Path, patients: Sequence[tuple[str, str]], results_root: str | Path,
                      dataset_id: int, experiment: str) -> Path:
    """Step 1: ``patients`` ((subject, center): the protocol's training patients) as the experiment's raw dataset."""
    dataset = Layout.nnunet_dataset(dataset_id, experiment)
    check_dataset_id(results_root, dataset_id, dataset)
    return export_dataset(harmonized_root, patients, nnunet_dirs(results_root)["nnUNet_raw"], dataset_id, experiment)


def _same_patients(record: Path, train_subjects: Sequence[str]) -> bool:
    try:
        return sorted(json.loads(record.read_text()).get("train") or []) == sorted(train_subjects)
    except (OSError, ValueError):
        return False


def train_experiment(checkpoint: str | Path, dataset_id: int, results_root: str | Path, settings: Mapping,
                     train_subjects: Sequence[str], device: str = "cpu", n_proc_da: int = 0,
                     log_file: str | Path | None = None) -> Path:
    """Step 3: train (or resume) the experiment's nnU-Net on fold ``all``; returns the final checkpoint.

    A fold folder made from other patients (the protocol's split changed) is removed first: resuming it
    would keep weights the record no longer names. ``subjects.json`` beside the checkpoint records the
    patients (``train``; ``val`` is empty: nnU-Net's fold ``all`` selects no checkpoint).
    """
    fold = Path(checkpoint).parent
    record = fold / SUBJECTS_RECORD
    if fold.is_dir() and not _same_patients(record, train_subjects):
        log.warning("%s: trained on other patients (or unrecorded): training from scratch", fold)
        shutil.rmtree(fold)
    fold.mkdir(parents=True, exist_ok=True)
    write_json({"train": sorted(train_subjects), "val": [], "nnunet_fold": "all",
                "note": "nnU-Net fold 'all': its internal validation reuses the training patients; "
                        "the final checkpoint is used (no selection)"}, record)
    train(dataset_id, results_root, budget_variables(settings), settings["configuration"], settings["trainer"],
          device=device, resume=True, n_proc_da=n_proc_da, log=log_file)
    if not Path(checkpoint).is_file():
        raise RuntimeError(f"nnU-Net's training finished without writing {checkpoint}")
    return Path(checkpoint)


def probability_model(checkpoint: str | Path, device=None, use_mirroring: bool = True) -> ProbabilityModel:
    """Step 4: the trained model (its ``fold_all/checkpoint_final.pth``) as a probability function.

    ``use_mirroring``: nnU-Net's own test-time mirroring (every axis; on in nnU-Net by default). The
    workflow sets it from ``inference.tta_flip``, thrombseg's test-time flip switch: off in the CPU demo,
    on in ``config/paper.yaml``.
    """
    from .predict import load_predictor, model_channels, predict_case

    model_dir = Path(checkpoint).parent.parent
    predictor = load_predictor(model_dir, checkpoint=Path(checkpoint).name, device=device,
                               use_mirroring=use_mirroring)
    return ProbabilityModel(tuple(model_channels(predictor)),
                            lambda case, keep: predict_case(predictor, case, keep), str(checkpoint))
