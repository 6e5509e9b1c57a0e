"""Rule splits: write the protocol's train/val/test table (computed from the cohort and seed)."""
from thrombseg.smk import run_step
from thrombseg.training.splits import write_splits


def step(sm):
    write_splits(sm.params.table, sm.output[0])


run_step(snakemake, step)  # noqa: F821
