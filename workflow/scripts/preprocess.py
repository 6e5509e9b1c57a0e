"""Rule preprocess: one patient (thrombseg.preprocessing.preprocess_subject)."""
from pathlib import Path

from thrombseg.preprocessing.pipeline import preprocess_subject
from thrombseg.smk import run_step


def step(sm):
    cfg = dict(sm.params.cfg, threads=sm.threads)
    preprocess_subject(Path(sm.input[0]).parent, sm.wildcards.subject, Path(sm.output[0]).parent, cfg)


run_step(snakemake, step)  # noqa: F821  (injected by Snakemake)
