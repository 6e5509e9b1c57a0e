"""Leakage audit: artefacts' own records of the patients they were fitted on, checked against the
experiment's test patients; a planted leak is caught, a missing record is a finding."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from thrombseg.audit import LeakageError, audit_experiment, write_audit


def _world(tmp_path, landmark_patients, val=("v1",)):
    pd.DataFrame({"subject": ["t1", "t2", "v1", "x1", "x2"], "center": ["A", "B", "A", "A", "B"],
                  "split": ["train", "train", "val", "test", "test"]}).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    (tmp_path / "landmarks.json").write_text(json.dumps({"fitted_on": list(landmark_patients)}))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pt").write_bytes(b"")
    (tmp_path / "m" / "subjects.json").write_text(json.dumps({"train": ["t1", "t2"], "val": list(val)}))
    (tmp_path / "m" / "postprocess.json").write_text(json.dumps({"subjects": list(val)}))
    return {"landmarks": ("landmarks", tmp_path / "landmarks.json"), "thrombus model": ("model", tmp_path / "m" / "model.pt"),
            "post-processing": ("tuning", tmp_path / "m" / "postprocess.json")}


def test_clean_experiment_passes_and_says_who_fitted_what(tmp_path):
    arts = _world(tmp_path, ["t1", "t2"])
    table = write_audit([audit_experiment("e", tmp_path / "s.tsv", arts)], tmp_path / "audit.tsv")
    assert set(table.role) == {"landmarks fit", "weights (train)", "checkpoint selection (val)", "post-processing choice (val)"}
    assert (table.test_patients_in_it == "").all() and table.n_patients.tolist() == [2, 2, 1, 1]
    assert (tmp_path / "audit.tsv").is_file()


@pytest.mark.parametrize("where", ["landmarks", "val"])
def test_planted_leak_is_caught_and_named(tmp_path, where):
    arts = _world(tmp_path, ["t1", "x2"] if where == "landmarks" else ["t1"], val=("v1", "x1") if where == "val" else ("v1",))
    with pytest.raises(LeakageError) as exc:
        write_audit([audit_experiment("e", tmp_path / "s.tsv", arts)], tmp_path / "audit.tsv")
    assert ("x2" if where == "landmarks" else "x1") in str(exc.value) and "\n" not in str(exc.value)
    assert pd.read_csv(tmp_path / "audit.tsv", sep="\t", keep_default_na=False).test_patients_in_it.str.len().max() > 0


def test_artefact_without_record_is_a_finding(tmp_path):
    arts = _world(tmp_path, ["t1"])
    (tmp_path / "m" / "subjects.json").unlink()
    with pytest.raises(LeakageError, match="no readable record"):
        audit_experiment("e", tmp_path / "s.tsv", arts)


def test_a_candidate_scorer_fitted_with_a_test_patient_is_caught(tmp_path):
    arts = _world(tmp_path, ["t1"])
    tuned = {"subjects": ["v1"], "candidate_scoring": {"subjects": ["v1"]}}
    (tmp_path / "m" / "postprocess.json").write_text(json.dumps(tuned))
    table = audit_experiment("e", tmp_path / "s.tsv", arts)
    assert "candidate scorer (val)" in set(table.role) and (table.test_patients_in_it == "").all()
    tuned["candidate_scoring"]["subjects"] = ["v1", "x2"]
    (tmp_path / "m" / "postprocess.json").write_text(json.dumps(tuned))
    with pytest.raises(LeakageError, match="candidate scorer.*x2"):
        write_audit([audit_experiment("e", tmp_path / "s.tsv", arts)], tmp_path / "audit.tsv")
