"""Rule harmonize: apply the landmarks + robust z-score, write memory-mappable .npy arrays."""
from pathlib import Path

from thrombseg.preprocessing import PreprocessingError
from thrombseg.preprocessing.harmonize import harmonize_subject
from thrombseg.smk import run_step


def step(sm):
    harmonize_subject(Path(sm.input.preproc).parent, sm.wildcards.subject, sm.input.landmarks,
                      Path(sm.output[0]).parent, sm.params.cfg)


run_step(snakemake, step, errors=(PreprocessingError,))  # noqa: F821
