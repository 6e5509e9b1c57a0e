"""Rule fit_landmarks: Nyul landmarks from the training patients only."""
from thrombseg.preprocessing import PreprocessingError
from thrombseg.preprocessing.harmonize import fit_landmarks
from thrombseg.preprocessing.settings import resolve_config
from thrombseg.smk import run_step


def step(sm):
    settings = resolve_config(sm.params.cfg)["harmonize"]
    fit_landmarks(sm.params.preproc_root, sm.params.subjects, sm.output[0],
                  cutoff=tuple(settings["cutoff"]), nyul_skip=settings["nyul_skip"])


run_step(snakemake, step, errors=(PreprocessingError,))  # noqa: F821
