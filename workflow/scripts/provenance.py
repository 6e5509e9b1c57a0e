"""Rule provenance: resolved config, versions, git commit, sheet checksum; BIDS dataset descriptions."""
from pathlib import Path

from thrombseg.report.provenance import write_dataset_description, write_provenance
from thrombseg.smk import run_step


def step(sm):
    write_provenance(Path(sm.output.config).parent, dict(sm.params.cfg), sm.input.sheet, repo=sm.params.repo)
    names = dict(sm.params.derivatives)
    for path in sm.output.descriptions:
        folder = Path(path).parent
        write_dataset_description(folder, names[folder.name])


run_step(snakemake, step)  # noqa: F821
