"""Rule harmonize: apply the landmarks + robust z-score, write memory-mappable .npy arrays."""
from thrombseg.preprocessing.harmonize import harmonize_subject
from thrombseg.smk import run_step


def step(sm):
    harmonize_subject(sm.params.preproc_root, sm.wildcards.subject, sm.input.landmarks,
                      sm.params.out_root, sm.params.cfg)


run_step(snakemake, step)  # noqa: F821
