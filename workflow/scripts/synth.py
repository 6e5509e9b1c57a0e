"""Rule synth: generate the synthetic cohort (thrombseg.synth.generate_cohort)."""
import json
from pathlib import Path

from thrombseg.core.fs import MANIFEST, write_manifest
from thrombseg.smk import run_step
from thrombseg.synth import generate_cohort


def adopt_unmanifested_cohort(out: Path) -> None:
    """Give a cohort of a version that wrote no manifest one, so that it can be replaced."""
    try:  # recognised by its own dataset description
        made_by = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"][0]["Name"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        made_by = None
    if made_by == "thrombseg.synth" and not (out / MANIFEST).is_file():
        write_manifest(out, "synth (earlier thrombseg version)")


def step(sm):
    out = Path(sm.output.sheet).parent
    adopt_unmanifested_cohort(out)
    # overwrite: Snakemake owns this folder (a previous cohort, never a user's files)
    generate_cohort(out, n_per_center=sm.params.n_per_center, seed=sm.params.seed, size=sm.params.size,
                    n_jobs=sm.threads, overwrite=True, negative_share=sm.params.negative_share)


run_step(snakemake, step)  # noqa: F821
