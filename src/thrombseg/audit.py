"""Leakage audit: which patients influenced each artefact an experiment uses, read from the
artefacts' own records, and a refusal when one of the experiment's test patients is among them.

Every fitted artefact records the patients it was fitted on:

==========================  ====================================  =================================
artefact                    file                                  record
==========================  ====================================  =================================
harmonization landmarks     ``landmarks.json``                    ``fitted_on``
thrombus / infarct model    ``subjects.json`` beside ``model.pt``  ``train`` (weights), ``val``
                                                                  (checkpoint selection)
post-processing tuning      ``postprocess.json``                  ``subjects``; the candidate
                                                                  scorer (``selection: score``):
                                                                  ``candidate_scoring.subjects``
==========================  ====================================  =================================

An artefact without its record is itself a finding: absence of leakage cannot be shown.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .core.io import write_table
from .core.layout import SUBJECTS_RECORD

COLUMNS = ["experiment", "artefact", "file", "role", "n_patients", "test_patients_in_it"]


class LeakageError(ValueError):
    """A test patient influenced an artefact of its own experiment (or a record is missing)."""


def fitted_patients(kind: str, path: str | Path) -> dict[str, list[str]]:
    """``{role: patients}`` that influenced an artefact, from its record (LeakageError if none)."""
    path = Path(path)
    record = path.parent / SUBJECTS_RECORD if kind == "model" else path
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise LeakageError(f"{record}: no readable record of the patients this artefact was fitted on "
                           f"({type(exc).__name__})") from None
    if kind == "landmarks":
        return {"landmarks fit": list(data.get("fitted_on") or [])}
    if kind == "model":
        return {"weights (train)": list(data.get("train") or []),
                "checkpoint selection (val)": list(data.get("val") or [])}
    if kind == "tuning":
        roles = {"post-processing choice (val)": list(data.get("subjects") or [])}
        if "candidate_scoring" in data:  # the scorer records its own patients: audit them, not the choice's
            roles["candidate scorer (val)"] = list(data["candidate_scoring"].get("subjects") or [])
        return roles
    raise ValueError(f"unknown artefact kind {kind!r} (landmarks | model | tuning)")


def test_patients(splits: str | Path) -> set[str]:
    """The ``test`` rows of a splits table."""
    df = pd.read_csv(splits, sep="\t", dtype=str, keep_default_na=False)
    return set(df.loc[df["split"] == "test", "subject"])


def audit_experiment(experiment: str, splits: str | Path, artefacts: dict[str, tuple[str, str | Path]]) -> pd.DataFrame:
    """One row per (artefact, role): how many patients influenced it, and which test patients did.

    Args:
        splits: the experiment's splits table (its ``test`` rows are the experiment's test patients).
        artefacts: ``{name: (kind, path)}``, kind ``landmarks`` | ``model`` | ``tuning``.
    """
    tests = test_patients(splits)
    rows = []
    for name, (kind, path) in artefacts.items():
        for role, patients in fitted_patients(kind, path).items():
            leaked = sorted(tests & set(patients))
            rows.append((experiment, name, str(path), role, len(set(patients)), ",".join(leaked)))
    return pd.DataFrame(rows, columns=COLUMNS)


def check(table: pd.DataFrame) -> None:
    """LeakageError naming every artefact a test patient of its experiment influenced."""
    bad = table[table["test_patients_in_it"] != ""]
    if len(bad):
        lines = [f"{r.experiment}: {r.artefact} ({r.role}, {r.file}) was fitted with its test patient(s) "
                 f"{r.test_patients_in_it}" for r in bad.itertuples()]
        raise LeakageError("leakage: " + "; ".join(lines))


def write_audit(tables: list[pd.DataFrame], out: str | Path) -> pd.DataFrame:
    """Write the audit table (always, so a failed run shows its evidence), then :func:`check` it."""
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    write_table(table, out)
    check(table)
    return table
