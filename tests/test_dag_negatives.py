"""Thrombus-negative patients and the "no thrombus" answer through the whole DAG: test_dag's tiny
synthetic sheet cohort (2 centers x 3 patients) with one negative per center, splits written in the
sheet so that validation and test each hold a negative, and ``inference.tune.selection: score``.

The candidate scorer is fitted on the validation patients only, the negative test patient gets
metric rows (Dice NaN, a presence probability, a yes/no answer), the tables get specificity, the
report the calibration figure, and the leakage audit passes. Measured: 6.3 min on 2 cores beside a
preprocessing job. Slow: not in the default run.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_dag import CENTERS, TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
EXPERIMENT = "upattllstm_gmd"


def _cohort(d):
    """The tiny cohort with one negative per center; per center: train a positive; ctrA: val the
    negative, test a positive; ctrC: val a positive, test the negative."""
    from thrombseg.synth import generate_cohort
    from thrombseg.synth.centers import DEFAULT_CENTERS

    sheet = generate_cohort(d / "raw", n_per_center=3, seed=1, n_jobs=2, negative_share=1 / 3,
                            centers=[c for c in DEFAULT_CENTERS if c["name"] in CENTERS])
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    for center, g in df.groupby("center"):
        pos = g.loc[g["thrombus_present"] != "false", "subject"].tolist()
        neg = g.loc[g["thrombus_present"] == "false", "subject"].tolist()
        assert len(pos) == 2 and len(neg) == 1
        roles = (["train", "test"], ["val"]) if center == CENTERS[0] else (["train", "val"], ["test"])
        for subject, split in [*zip(pos, roles[0]), *zip(neg, roles[1])]:
            df.loc[df["subject"] == subject, "split"] = split
    df.to_csv(sheet, sep="\t", index=False)
    return sheet, df


def test_negatives_reach_scoring_metrics_tables_and_audit(tmp_path):
    sheet, df = _cohort(tmp_path)
    conf = TINY | {"samples": str(sheet)}
    conf["inference"] = dict(conf["inference"], tune={"min_volume_mm3": [20, 40], "selection": "score"})
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(conf))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "run"),
           "--configfile", str(REPO / "config" / "config.yaml"), str(cfg), "--cores", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1700)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    results = tmp_path / "run" / "results"
    split = dict(zip(df["subject"], df["split"]))
    negative = {s for s, p in zip(df["subject"], df["thrombus_present"]) if p == "false"}

    # the scorer: fitted on the validation patients, one of them negative, and nothing else
    tuned = json.loads((results / "models" / EXPERIMENT / "thrombus" / "postprocess.json").read_text())
    scoring = tuned["candidate_scoring"]
    assert tuned["chosen"]["selection"] == "score" and scoring["fitted"]
    assert sorted(scoring["subjects"]) == sorted(s for s in split if split[s] == "val")
    assert scoring["n_negative_patients"] == 1 and 0.0 <= tuned["chosen"]["presence_threshold"] <= 1.0

    # the negative test patient: rows for every subset, Dice and detection NaN, a presence answer
    table = pd.read_csv(results / "metrics" / EXPERIMENT / "per_subject.tsv", sep="\t")
    test_negative = next(s for s in negative if split[s] == "test")
    rows = table[table["subject"] == test_negative]
    assert len(rows) >= 2 and not rows["truth_present"].any()
    assert rows["dice"].isna().all() and rows["detected"].isna().all()
    assert rows["presence_prob"].between(0, 1).all()
    assert (rows["pred_present"] == (rows["presence_prob"] >= tuned["chosen"]["presence_threshold"])).all()

    per_center = (results / "tables" / "per_center.md").read_text()
    assert "Specificity" in per_center and "FP components / negative" in per_center
    assert (results / "figures" / EXPERIMENT / "presence_calibration.png").is_file()
    audit = pd.read_csv(results / "audit" / "leakage.tsv", sep="\t", keep_default_na=False)
    assert (audit["test_patients_in_it"] == "").all()
