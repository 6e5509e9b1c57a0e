"""Rule tables: per-center and per-sequence-set paper tables (thrombseg.report.tables)."""
from pathlib import Path

from thrombseg.report.tables import write_tables
from thrombseg.smk import run_step


def step(sm):
    write_tables(list(sm.input.per_subject), list(sm.input.per_sequence_set), Path(sm.output.per_center).parent,
                 n_boot=sm.params.n_boot)


run_step(snakemake, step)  # noqa: F821
