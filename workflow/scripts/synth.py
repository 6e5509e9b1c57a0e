"""Snakemake wrapper: generate the synthetic cohort (thrombseg.synth.generate_cohort)."""
import json
import logging
import sys
from pathlib import Path

from thrombseg.core.fs import MANIFEST, write_manifest
from thrombseg.synth import generate_cohort

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821  (injected by Snakemake)
logging.basicConfig(stream=sys.stdout, level=logging.INFO)
p = snakemake.params  # noqa: F821
out = Path(snakemake.output.sheet).parent  # noqa: F821
try:  # a cohort of a version that wrote no manifest: recognised by its own description, then replaced
    made_by = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"][0]["Name"]
except (OSError, ValueError, KeyError, IndexError, TypeError):
    made_by = None
if made_by == "thrombseg.synth" and not (out / MANIFEST).is_file():
    write_manifest(out, "synth (earlier thrombseg version)")
# overwrite: Snakemake owns this folder (a previous cohort, never a user's files)
generate_cohort(out, n_per_center=p.n_per_center, seed=p.seed, size=p.size,
                n_jobs=snakemake.threads, overwrite=True)  # noqa: F821
