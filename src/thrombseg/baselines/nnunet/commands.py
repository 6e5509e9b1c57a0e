"""nnU-Net's plan/preprocess command and its training, run as subprocesses with a per-job environment.

A subprocess is what a Snakemake rule runs too, and it keeps nnU-Net's folders, thread settings and
trainer lookup out of the calling process (``environment.nnunet_env``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...core.layout import NNUNET_FOLD as FOLD_ALL  # one model on every training patient: thrombseg's splits
from ...plan import NNUNET_BUDGET_TRAINER as BUDGET_TRAINER
from ...plan import NNUNET_CONFIGURATIONS as CONFIGURATIONS
from ...plan import NNUNET_DEFAULT_CONFIGURATION as DEFAULT_CONFIGURATION  # 2d fits the CPU demo's minutes
from ...plan import NNUNET_GMD_TRAINER as GMD_TRAINER
from .environment import PLAN_N_PROC_DA, TRAIN_N_PROC_DA, nnunet_env

__all__ = ["BUDGET_TRAINER", "CONFIGURATIONS", "DEFAULT_CONFIGURATION", "FOLD_ALL", "GMD_TRAINER", "TRAIN_MODULE",
           "executable", "plan_and_preprocess", "plan_and_preprocess_command", "run", "train", "train_command"]
TRAIN_MODULE = "thrombseg.baselines.nnunet.train"


def executable(name: str) -> str:
    """An nnU-Net console script: beside this interpreter first (a venv not on PATH), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} nor on PATH: is nnunetv2 installed?")
    return found


def _check_configuration(configuration: str) -> None:
    if configuration not in CONFIGURATIONS:
        raise ValueError(f"nnU-Net configuration must be one of {', '.join(CONFIGURATIONS)}, got {configuration!r}")


def plan_and_preprocess_command(dataset_id: int, configuration: str = DEFAULT_CONFIGURATION,
                                processes: int = 1) -> list[str]:
    """``nnUNetv2_plan_and_preprocess`` for one configuration (nnU-Net's planner plans them all; only
    ``configuration`` is preprocessed), with the dataset's integrity checked first
    and the fingerprint redone (``--clean``: a re-export may have changed the patients)."""
    _check_configuration(configuration)
    return [executable("nnUNetv2_plan_and_preprocess"), "-d", str(int(dataset_id)), "-c", configuration,
            "-np", str(int(processes)), "-npfp", str(int(processes)), "--verify_dataset_integrity", "--clean"]


def train_command(dataset_id: int, configuration: str = DEFAULT_CONFIGURATION, trainer: str = BUDGET_TRAINER,
                  device: str = "cpu", resume: bool = False) -> list[str]:
    """nnU-Net's training (``train.py``: ``nnUNetv2_train``'s arguments) on fold ``all``; ``resume``
    continues from the last checkpoint (``--c``), and nnU-Net starts afresh when there is none, so a
    rule may always pass it."""
    _check_configuration(configuration)
    cmd = [sys.executable, "-m", TRAIN_MODULE, str(int(dataset_id)), configuration, FOLD_ALL, "-tr", trainer,
           "-device", device]
    return cmd + (["--c"] if resume else [])


def run(cmd: Sequence[str], results_root: str | Path, budget: Mapping[str, object] | None = None,
        n_proc_da: str | int | None = None, log: str | Path | None = None) -> None:
    """Run an nnU-Net command with its folders under ``results_root``; CalledProcessError on failure.

    ``log``: a file that receives the command's output (appended: a resumed run keeps its history).
    """
    env = nnunet_env(results_root, budget, n_proc_da)
    if log is None:
        subprocess.run(list(cmd), env=env, check=True)
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        subprocess.run(list(cmd), env=env, check=True, stdout=fh, stderr=subprocess.STDOUT)


def plan_and_preprocess(dataset_id: int, results_root: str | Path, configuration: str = DEFAULT_CONFIGURATION,
                        processes: int = 1, log: str | Path | None = None) -> None:
    """nnU-Net's planner and preprocessing of an exported dataset (:func:`plan_and_preprocess_command`)."""
    run(plan_and_preprocess_command(dataset_id, configuration, processes), results_root,
        n_proc_da=PLAN_N_PROC_DA, log=log)


def train(dataset_id: int, results_root: str | Path, budget: Mapping[str, object], configuration: str = DEFAULT_CONFIGURATION,
          trainer: str = BUDGET_TRAINER, device: str = "cpu", resume: bool = True,
          n_proc_da: int = TRAIN_N_PROC_DA, log: str | Path | None = None) -> None:
    """nnU-Net's training with a budget (``environment.EPOCHS_VAR`` etc.); resumes by default (:func:`train_command`)."""
    run(train_command(dataset_id, configuration, trainer, device, resume), results_root, budget,
        n_proc_da=n_proc_da, log=log)
