"""nnU-Net's folders under a results root, set for one call only, never in the user's environment.

nnU-Net v2 (2.6+) reads ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` from
``os.environ`` lazily (``nnunetv2.paths._EnvPath`` looks each one up when a path is built), so two
ways work: :func:`nnunet_env` returns the environment for a subprocess running nnU-Net's own commands
(what a Snakemake rule does), :func:`nnunet_environ` sets it in this process and restores it after
(for nnU-Net's functions called in-process).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ...core.layout import NNUNET_DIR, Layout  # results/nnunet/{raw,preprocessed,trained}
from ...core.layout import NNUNET_PREPROCESSED as PREPROCESSED
from ...core.layout import NNUNET_RAW as RAW
from ...core.layout import NNUNET_TRAINED as TRAINED

__all__ = ["DROPOUT_VAR", "EPOCHS_VAR", "ITERS_VAR", "NNUNET_DIR", "PREPROCESSED", "RAW", "SEED_VAR", "TRAINED",
           "VAL_ITERS_VAR", "nnunet_dirs", "nnunet_env", "nnunet_environ", "nnunet_variables", "patched_environ"]
# nnU-Net's augmentation workers. Training: 0 augments in the training process itself (a CPU run has no
# cores to spare for worker processes). Planning: at least 1, as nnU-Net's planner sets torch's
# thread count to this number (0 raises).
TRAIN_N_PROC_DA, PLAN_N_PROC_DA = 0, 1
# Budget of the trainer variants (trainers.py); set per job like the folders.
EPOCHS_VAR, ITERS_VAR, VAL_ITERS_VAR = "THROMBSEG_NNUNET_EPOCHS", "THROMBSEG_NNUNET_ITERS", "THROMBSEG_NNUNET_VAL_ITERS"
DROPOUT_VAR, SEED_VAR = "THROMBSEG_NNUNET_DROPOUT", "THROMBSEG_NNUNET_SEED"


def nnunet_dirs(results_root: str | Path) -> dict[str, Path]:
    """nnU-Net's three folders under ``<results_root>/nnunet`` (``core.layout.Layout.nnunet``)."""
    lay = Layout(str(results_root))
    return {"nnUNet_raw": Path(lay.nnunet(RAW)), "nnUNet_preprocessed": Path(lay.nnunet(PREPROCESSED)),
            "nnUNet_results": Path(lay.nnunet(TRAINED))}


def nnunet_variables(results_root: str | Path, budget: Mapping[str, object] | None = None,
                     n_proc_da: str | int | None = None) -> dict[str, str]:
    """The variables one nnU-Net call needs: its folders, the augmentation workers and the budget.

    ``budget`` maps :data:`EPOCHS_VAR` etc. to values; ``n_proc_da`` sets ``nnUNet_n_proc_DA``
    (None: nnU-Net's own choice; see :data:`TRAIN_N_PROC_DA`).
    """
    out = {k: str(v) for k, v in nnunet_dirs(results_root).items()}
    if n_proc_da is not None:
        out["nnUNet_n_proc_DA"] = str(int(n_proc_da))
    out.update({k: str(v) for k, v in (budget or {}).items()})
    return out


def nnunet_env(results_root: str | Path, budget: Mapping[str, object] | None = None,
               n_proc_da: str | int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A full environment for a subprocess: ``base`` (default ``os.environ``) plus :func:`nnunet_variables`."""
    env = dict(os.environ if base is None else base)
    env.update(nnunet_variables(results_root, budget, n_proc_da))
    for d in nnunet_dirs(results_root).values():
        d.mkdir(parents=True, exist_ok=True)
    return env


@contextmanager
def patched_environ(variables: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Set ``variables`` in ``os.environ`` for the block; each is restored after (removed where it
    was unset), also when the block raises."""
    new = {k: str(v) for k, v in variables.items()}
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield new
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def nnunet_environ(results_root: str | Path, budget: Mapping[str, object] | None = None,
                   n_proc_da: str | int | None = None) -> Iterator[dict[str, str]]:
    """:func:`nnunet_variables` in ``os.environ`` for the block only (:func:`patched_environ`)."""
    with patched_environ(nnunet_variables(results_root, budget, n_proc_da)) as new:
        yield new

