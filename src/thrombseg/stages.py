"""Which pipeline stages exist, derived from the workflow's rule files (never hand-maintained).

A stage is built when ``workflow/rules/<stage>.smk`` exists; the main job runs those and names the
others plainly instead of pretending they ran.
"""

from __future__ import annotations

from pathlib import Path

PIPELINE: tuple[tuple[str, str], ...] = (
    ("synth", "embedded synthetic multi-center cohort"),
    ("ingest", "sheet validation, canonical RAS NIfTIs, sidecars"),
    ("preprocessing", "skull stripping, co-registration, N4, site harmonization, QC"),
    ("training", "curriculum training with gradual modality dropout"),
    ("inference", "prediction with any sequence subset + lesion-guided post-processing"),
    ("evaluation", "per-center / per-sequence-set Dice and detection"),
    ("report", "paper figures and HTML report"),
)


def workflow_dir() -> Path:
    """The repository's ``workflow/`` folder (the package is installed in editable mode)."""
    return Path(__file__).resolve().parents[2] / "workflow"


def stage_status(rules_dir: Path | None = None) -> list[tuple[str, bool, str]]:
    """Return (stage, built, description) for every stage of the pipeline, in DAG order."""
    rules_dir = rules_dir or workflow_dir() / "rules"
    return [(name, (rules_dir / f"{name}.smk").is_file(), what) for name, what in PIPELINE]
