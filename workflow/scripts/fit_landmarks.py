"""Rule fit_landmarks: Nyul landmarks from the training patients only."""
from thrombseg.preprocessing.harmonize import fit_landmarks
from thrombseg.preprocessing.pipeline import resolve_config
from thrombseg.smk import run_step


def step(sm):
    h = resolve_config(sm.params.cfg)["harmonize"]
    fit_landmarks(sm.params.preproc_root, sm.params.subjects, sm.output[0],
                  cutoff=tuple(h["cutoff"]), nyul_skip=h["nyul_skip"])


run_step(snakemake, step)  # noqa: F821
