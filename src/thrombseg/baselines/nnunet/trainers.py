"""nnU-Net trainer variants: a budget from the job's environment, and gradual modality dropout on top.

nnU-Net builds a trainer from fixed arguments (plans, configuration, fold, dataset.json, device), so,
like its own ``nnUNetTrainer_5epochs``, a variant sets its budget in ``__init__``; the values come
from variables the job sets (``environment.EPOCHS_VAR`` etc.), so a config can give nnU-Net the
same minutes as UpAttLLSTM. nnU-Net finds a trainer by its class name;
``lookup.findable_trainers`` makes it find these (:data:`TRAINERS`).
"""

from __future__ import annotations

import json
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ...training.config import DropoutConfig, TrainConfig
from ...training.trainer import curriculum, make_dropout
from .environment import DROPOUT_VAR, EPOCHS_VAR, ITERS_VAR, SEED_VAR, VAL_ITERS_VAR

DEFAULT_SEED = 0
SEED_STRIDE = 1_000_003  # (seed, epoch) -> one generator seed per epoch
# A checkpoint every epoch (nnU-Net: every 50), so a killed run resumed with --c loses at most one
# epoch; a budgeted run has few epochs of a small network, and a checkpoint costs little.
SAVE_EVERY = 1
NNUNET_DEFAULT_DEVICE = torch.device("cuda")  # nnUNetTrainer's own default, kept for its signature


def _budget(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    n = int(value)
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return n


class nnUNetTrainerBudget(nnUNetTrainer):  # nnU-Net's class naming: -tr finds a trainer by its name
    """nnU-Net's trainer with epochs, iterations per epoch and validation iterations from the job's
    environment (unset variables keep nnU-Net's own values: 1000 / 250 / 50), a checkpoint every
    :data:`SAVE_EVERY` epochs, and no final validation on fold ``all``."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = NNUNET_DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _budget(EPOCHS_VAR, self.num_epochs)
        self.num_iterations_per_epoch = _budget(ITERS_VAR, self.num_iterations_per_epoch)
        self.num_val_iterations_per_epoch = _budget(VAL_ITERS_VAR, self.num_val_iterations_per_epoch)
        self.save_every = SAVE_EVERY

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation, except on fold ``all``: there nnU-Net would predict the training
        patients themselves (fold ``all`` validates on them), which tells nothing and selects nothing
        (the final checkpoint is the model) but costs minutes per patient on a CPU. thrombseg tunes the
        post-processing on its validation patients and evaluates on its test patients instead."""
        if str(self.fold) == "all":
            self.print_to_log_file("final validation skipped: fold 'all' would validate on its training patients")
            return None
        return super().perform_actual_validation(save_probabilities)


class nnUNetTrainerBudgetGMD(nnUNetTrainerBudget):
    """The budget trainer with UpAttLLSTM's gradual modality dropout on every training batch.

    The schedule is the same code (``training.trainer.curriculum`` / ``make_dropout``) with the
    dropout config as JSON in ``environment.DROPOUT_VAR`` (default: ``DropoutConfig()``). A channel
    that is all zero in a sample is an absent sequence (dataset.FILL_VALUE after nnU-Net's
    normalisation) and is never counted as available. The generator is re-seeded from (seed, epoch),
    so after a resume (``--c``) each epoch's draws start where an uninterrupted run's would (nnU-Net's
    own patch sampling is not reproducible across a resume, so the batches themselves differ).
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = NNUNET_DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        channels = [dataset_json["channel_names"][k] for k in sorted(dataset_json["channel_names"], key=int)]
        dropout = DropoutConfig.from_dict(json.loads(os.environ.get(DROPOUT_VAR) or "{}"))
        self.gmd_config = TrainConfig(modalities=channels, epochs=self.num_epochs, dropout=dropout)
        self.gmd = make_dropout(self.gmd_config)
        self.gmd_seed = int(os.environ.get(SEED_VAR) or DEFAULT_SEED)
        self._gmd_generator, self._gmd_epoch = torch.Generator(), None

    def train_step(self, batch: dict) -> dict:
        """Drop sequences of ``batch['data']`` at the current epoch's attenuation, then nnU-Net's step."""
        epoch = self.current_epoch
        if self._gmd_epoch != epoch:
            self._gmd_generator.manual_seed(self.gmd_seed * SEED_STRIDE + epoch)
            self._gmd_epoch = epoch
        if self.gmd.active(epoch, self.num_epochs):
            attenuation = curriculum(epoch, self.gmd_config)[0]
            data = batch["data"]
            available = data.flatten(2).abs().amax(-1) > 0
            batch = {**batch, "data": self.gmd(data, available, attenuation, generator=self._gmd_generator)[0]}
        return super().train_step(batch)


TRAINERS: dict[str, type[nnUNetTrainer]] = {c.__name__: c for c in (nnUNetTrainerBudget, nnUNetTrainerBudgetGMD)}
