"""Rule nnunet_train: nnU-Net's training (budget or GMD trainer, fold all), resumed when killed."""
import torch

import thrombseg  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads OpenMP
from thrombseg.baselines.nnunet.environment import TRAIN_N_PROC_DA
from thrombseg.baselines.nnunet.workflow import train_experiment
from thrombseg.smk import run_step


def step(sm):
    cuda = torch.cuda.is_available()  # a GPU job (train_resources) gets one; a CPU job trains on the CPU
    train_experiment(sm.output.checkpoint, sm.params.settings["dataset_id"], sm.params.results, sm.params.settings,
                     sm.params.train_subjects, device="cuda" if cuda else "cpu",
                     n_proc_da=sm.threads if cuda else TRAIN_N_PROC_DA, log_file=sm.log.nnunet)


run_step(snakemake, step)  # noqa: F821
