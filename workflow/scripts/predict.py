"""Rule predict: one test patient, every sequence subset (thrombseg.inference.predict)."""
from pathlib import Path

import torch

import thrombseg  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads OpenMP
from thrombseg.inference.predict import inference_settings, predict_subject
from thrombseg.inference.settings import InferenceError
from thrombseg.models.checkpoint import CheckpointError
from thrombseg.smk import run_step


def step(sm):
    torch.set_num_threads(sm.threads)
    tuned = sm.input.get("tuned") or None  # [] when the experiment's post-processing is not tuned
    predict_subject(Path(sm.input.harmonized).parent, sm.wildcards.subject, sm.params.center, sm.input.thrombus,
                    sm.input.infarct, sm.output[0], sm.wildcards.experiment,
                    inference_settings(sm.params.cfg, tuned))


run_step(snakemake, step, errors=(CheckpointError, InferenceError))  # noqa: F821
