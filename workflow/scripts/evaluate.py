"""Rule evaluate: gather per-subject metric rows and write the aggregated tables."""
from pathlib import Path

import pandas as pd

from thrombseg.evaluation.aggregate import write_tables
from thrombseg.smk import run_step


def step(sm):
    frames = [pd.read_csv(Path(d) / f"{s}_metrics.tsv", sep="\t") for d, s in zip(sm.input, sm.params.subjects)]
    df = pd.concat(frames, ignore_index=True)
    write_tables(df, Path(sm.output.per_subject).parent, n_boot=sm.params.n_boot)


run_step(snakemake, step)  # noqa: F821
