"""Rule splits: write the protocol's train/val/test table (thrombseg.plan, from the cohort and seed)."""
from thrombseg.core.io import write_table
from thrombseg.smk import run_step


def step(sm):
    write_table(sm.params.table, sm.output[0], sep="\t")


run_step(snakemake, step)  # noqa: F821
