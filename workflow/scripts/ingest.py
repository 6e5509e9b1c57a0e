"""Snakemake wrapper: ingest one subject (thrombseg.ingest)."""
import json
import sys

from thrombseg.core.fs import OutputError
from thrombseg.ingest import IngestError, ingest_from_sheet

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    try:
        # Snakemake owns this folder: a previous ingest (never a user's files) may be replaced.
        side = ingest_from_sheet(sm.input.sheet, sm.wildcards.subject, sm.output[0], overwrite=True)
    except (IngestError, OutputError) as exc:
        log.write(f"error: {exc}\n")
        sys.stderr.write(f"ingest {sm.wildcards.subject}: {exc}\n")
        sys.exit(1)
    log.write(json.dumps(side, indent=1) + "\n")
