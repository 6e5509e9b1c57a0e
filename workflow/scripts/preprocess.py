"""Rule preprocess: one patient (thrombseg.preprocessing.preprocess_subject)."""
from pathlib import Path

from thrombseg.preprocessing import PreprocessingError
from thrombseg.preprocessing.pipeline import preprocess_subject
from thrombseg.smk import run_step


def step(sm):
    cfg = dict(sm.params.cfg, threads=sm.threads)
    # overwrite: Snakemake owns this folder (a previous run's output, never a user's files)
    preprocess_subject(Path(sm.input[0]).parent, sm.wildcards.subject, Path(sm.output[0]).parent, cfg,
                       overwrite=True)


run_step(snakemake, step, errors=(PreprocessingError,))  # noqa: F821
