"""Rule nnunet_predict: one test patient, every sequence subset, with the nnU-Net baseline's
probabilities and thrombseg's post-processing and metrics (thrombseg.inference.predict)."""
from pathlib import Path

import torch

import thrombseg  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads OpenMP
from thrombseg.baselines.nnunet.workflow import probability_model
from thrombseg.inference.predict import inference_device, inference_settings, predict_subject
from thrombseg.inference.settings import InferenceError
from thrombseg.models.checkpoint import CheckpointError
from thrombseg.smk import run_step


def step(sm):
    torch.set_num_threads(sm.threads)
    icfg = inference_settings(sm.params.cfg, sm.input.get("tuned") or None)
    thrombus = probability_model(sm.input.thrombus, inference_device(icfg.device), use_mirroring=icfg.tta_flip)
    predict_subject(Path(sm.input.harmonized).parent, sm.wildcards.subject, sm.params.center, thrombus,
                    sm.input.infarct, sm.output[0], sm.wildcards.experiment, icfg)


run_step(snakemake, step, errors=(CheckpointError, InferenceError))  # noqa: F821
