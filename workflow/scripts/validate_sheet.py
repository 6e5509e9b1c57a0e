"""Snakemake wrapper: full (voxel-level) validation of the sample sheet."""
import json
import sys

from thrombseg.sheet import SheetError, validate_sheet

sm = snakemake  # noqa: F821  (injected by Snakemake)
with open(sm.log[0], "w") as log:
    try:
        df = validate_sheet(sm.input.sheet)
    except SheetError as exc:
        log.write(str(exc) + "\n")
        sys.stderr.write(str(exc) + "\n")
        sys.exit(1)
    summary = {"sheet": sm.input.sheet, "n_subjects": len(df),
               "centers": df.groupby("center").size().to_dict()}
    log.write(json.dumps(summary) + "\n")
with open(sm.output[0], "w") as f:
    json.dump(summary, f, indent=1)
