"""Rules train_thrombus / train_infarct: resumable training (thrombseg.training)."""
from pathlib import Path

import torch

import thrombseg  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads OpenMP
from thrombseg.inference.settings import InferenceError
from thrombseg.models.checkpoint import CheckpointError
from thrombseg.smk import run_step
from thrombseg.training.cli import run_training


def step(sm):
    torch.set_num_threads(sm.threads)
    cfg = dict(sm.params.cfg)
    cfg.setdefault("num_workers", 0 if not torch.cuda.is_available() else min(4, sm.threads))
    run_training(sm.params.harmonized_root, sm.input.splits, Path(sm.output.model).parent, cfg)


run_step(snakemake, step, errors=(CheckpointError, InferenceError))  # noqa: F821
