"""Rule ingest: one subject of the sheet to canonical RAS NIfTIs and a sidecar (thrombseg.ingest)."""
import json
import logging

from thrombseg.ingest import ingest_from_sheet
from thrombseg.smk import run_step


def step(sm):
    # overwrite: Snakemake owns this folder (a previous ingest, never a user's files)
    side = ingest_from_sheet(sm.input.sheet, sm.wildcards.subject, sm.output[0], overwrite=True)
    logging.getLogger("thrombseg.ingest").info("sidecar %s", json.dumps(side, indent=1))


run_step(snakemake, step)  # noqa: F821
