"""Rule nnunet_tune_postprocess: post-processing settings of an nnU-Net experiment chosen on its
protocol's validation patients, exactly as rule tune_postprocess does for a thrombseg network."""
import torch

import thrombseg  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads OpenMP
from thrombseg.baselines.nnunet.workflow import probability_model
from thrombseg.inference.predict import inference_device, inference_settings
from thrombseg.inference.settings import InferenceError
from thrombseg.inference.tune import tune_subjects
from thrombseg.models.checkpoint import CheckpointError
from thrombseg.smk import run_step


def step(sm):
    torch.set_num_threads(sm.threads)
    icfg = inference_settings(sm.params.cfg)
    thrombus = probability_model(sm.input.thrombus, inference_device(icfg.device), use_mirroring=icfg.tta_flip)
    # tune_subjects logs every candidate and the choice
    tune_subjects(sm.params.harmonized_root, dict(sm.params.subjects), thrombus, sm.input.infarct,
                  sm.output[0], sm.params.cfg)


run_step(snakemake, step, errors=(CheckpointError, InferenceError))  # noqa: F821
