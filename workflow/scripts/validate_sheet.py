"""Rule validate_sheet: full (voxel-level) validation of the sample sheet."""
import json
import logging

from thrombseg.core.io import write_text
from thrombseg.sheet import validate_sheet
from thrombseg.smk import run_step


def step(sm):
    df = validate_sheet(sm.input.sheet)
    summary = {"sheet": sm.input.sheet, "n_subjects": len(df), "centers": df.groupby("center").size().to_dict()}
    logging.getLogger("thrombseg.sheet").info("%s", json.dumps(summary))
    write_text(json.dumps(summary, indent=1), sm.output[0])


run_step(snakemake, step)  # noqa: F821
