"""Rule predict: one test patient, every sequence subset (thrombseg.inference.predict)."""
from pathlib import Path

import torch

from thrombseg.inference.predict import InferenceConfig, predict_subject
from thrombseg.smk import run_step


def step(sm):
    torch.set_num_threads(sm.threads)
    predict_subject(Path(sm.input.harmonized).parent, sm.wildcards.subject, sm.params.center, sm.input.thrombus,
                    sm.input.infarct, sm.output[0], sm.wildcards.experiment,
                    InferenceConfig.from_dict(sm.params.cfg))


run_step(snakemake, step)  # noqa: F821
