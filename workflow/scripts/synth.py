"""Snakemake wrapper: generate the synthetic cohort (thrombseg.synth.generate_cohort)."""
import logging
from pathlib import Path
import sys

from thrombseg.synth import generate_cohort

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821  (injected by Snakemake)
logging.basicConfig(stream=sys.stdout, level=logging.INFO)
p = snakemake.params  # noqa: F821
generate_cohort(Path(snakemake.output.sheet).parent,  # noqa: F821
                n_per_center=p.n_per_center, seed=p.seed, size=p.size,
                n_jobs=snakemake.threads, overwrite=True)  # noqa: F821  (Snakemake owns the folder)
