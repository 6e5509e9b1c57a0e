"""The nnU-Net baseline inside the DAG: config/config.yaml's ``nnunet_2d`` (switched off by test_dag's
tiny config, back on here with a budget of 2 iterations) on the tiny synthetic sheet cohort of test_dag.py runs export -> nnU-Net plan/preprocess -> training (1 epoch of 2
iterations) -> post-processing tuning on the validation patients -> prediction of every test
patient with each sequence subset -> thrombseg's metrics, and the leakage audit covers its model.

The DAG also trains test_dag's tiny upattllstm_gmd (config/config.yaml's experiment, which an
overlay cannot remove): the audit rule audits every experiment.

Measured: 911 s (15 min) on 2 cores shared with three other CPU-bound jobs; about 6.5 min of it is
nnU-Net's (planning and preprocessing 90 s, training 20 s, tuning on 2 validation patients 50 s,
prediction of 2 test patients x 5-6 sequence subsets 100 + 75 s), the rest the cohort and its
preprocessing.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_dag import tiny_cohort

pytest.importorskip("nnunetv2")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

EXPERIMENT = "nnunet_2d"  # config/config.yaml's baseline, on a tiny budget
NNUNET = {"training": {"experiments": {EXPERIMENT: {"enabled": True, "epochs": 1, "iterations": 2, "val_iterations": 1}}}}


def test_nnunet_experiment_runs_through_the_dag_to_metrics_and_audit(tmp_path):
    t0 = time.monotonic()
    cfg = tiny_cohort(tmp_path)
    over = tmp_path / "nnunet.yaml"
    over.write_text(yaml.safe_dump(NNUNET))
    run = tmp_path / "run"
    results = run / "results"
    targets = [f"results/metrics/{EXPERIMENT}/per_subject.tsv", "results/audit/leakage.tsv"]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(run),
           "--configfile", str(REPO / "config" / "config.yaml"), str(cfg), str(over), "--cores", "2", *targets]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=2200)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    print(f"tiny DAG with nnU-Net: {time.monotonic() - t0:.0f} s")
    text = res.stdout + res.stderr
    for rule in ("nnunet_export", "nnunet_plan", "nnunet_train", "nnunet_tune_postprocess", "nnunet_predict"):
        assert f"rule {rule}:" in text, rule

    splits = pd.read_csv(results / "splits" / "multicentric.tsv", sep="\t")
    part = {k: sorted(splits.loc[splits["split"] == k, "subject"]) for k in ("train", "val", "test")}
    # nnU-Net's dataset holds the protocol's training patients only
    raw = next((results / "nnunet" / "raw").glob(f"Dataset*_{EXPERIMENT}"))
    assert sorted(p.name.removesuffix(".nii.gz") for p in (raw / "labelsTr").iterdir()) == part["train"]
    model = next((results / "nnunet" / "trained" / raw.name).glob("nnUNetTrainerBudget__nnUNetPlans__2d"))
    record = json.loads((model / "fold_all" / "subjects.json").read_text())
    assert record["train"] == part["train"] and record["val"] == []
    tuned = json.loads((results / "models" / EXPERIMENT / "thrombus" / "postprocess.json").read_text())
    assert tuned["subjects"] == part["val"]

    # the same per-subject table as any experiment: each test patient, each sequence subset
    table = pd.read_csv(results / "metrics" / EXPERIMENT / "per_subject.tsv", sep="\t")
    assert set(table["experiment"]) == {EXPERIMENT} and sorted(set(table["subject"])) == part["test"]
    for _, rows in table.groupby("subject"):
        full = rows["n_sequences"].max()
        assert (rows["n_sequences"] == full).sum() == 1 and (rows["n_sequences"] == full - 1).sum() == full
    assert {"dice", "detected", "raw_dice"} <= set(table.columns)
    for s in part["test"]:
        assert (results / "predictions" / EXPERIMENT / s / f"{s}_thrombus_mask.nii.gz").is_file()

    audit = pd.read_csv(results / "audit" / "leakage.tsv", sep="\t", keep_default_na=False)
    mine = audit[audit["experiment"] == EXPERIMENT]
    assert set(mine["artefact"]) == {"harmonization landmarks", "thrombus model", "infarct model",
                                     "post-processing tuning"}
    weights = mine[(mine["artefact"] == "thrombus model") & (mine["role"] == "weights (train)")].iloc[0]
    assert weights["n_patients"] == len(part["train"]) and weights["file"].endswith("fold_all/checkpoint_final.pth")
    assert (audit["test_patients_in_it"] == "").all()
