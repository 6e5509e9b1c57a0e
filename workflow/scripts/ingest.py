"""Snakemake wrapper: ingest one subject (thrombseg.ingest)."""
import json
import sys

from thrombseg.ingest import IngestError, ingest_from_sheet

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    try:
        side = ingest_from_sheet(sm.input.sheet, sm.wildcards.subject, sm.output[0])
    except IngestError as exc:
        log.write(f"error: {exc}\n")
        sys.stderr.write(f"ingest {sm.wildcards.subject}: {exc}\n")
        sys.exit(1)
    log.write(json.dumps(side, indent=1) + "\n")
