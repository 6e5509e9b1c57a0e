"""Rule tune_postprocess: post-processing settings chosen on validation patients (thrombseg.inference.tune)."""
import torch

import thrombseg  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads OpenMP
from thrombseg.inference.settings import InferenceError
from thrombseg.inference.tune import tune_subjects
from thrombseg.models.checkpoint import CheckpointError
from thrombseg.smk import run_step


def step(sm):
    torch.set_num_threads(sm.threads)
    # tune_subjects logs every candidate and the choice
    tune_subjects(sm.params.harmonized_root, dict(sm.params.subjects), sm.input.thrombus, sm.input.infarct,
                  sm.output[0], sm.params.cfg)


run_step(snakemake, step, errors=(CheckpointError, InferenceError))  # noqa: F821
