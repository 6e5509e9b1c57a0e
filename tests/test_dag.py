"""The whole DAG runs end to end on a tiny synthetic sheet cohort (2 centers x 3 patients, tiny
training), `snakemake --report` builds the HTML report from it, and a one-center rerun
(`--config centers=[ctrC] --forcerun ingest`) redoes that center's test patients with the existing
models while leaving every other output untouched (checked by modification times).

About 4 minutes on 2 cores, most of it preprocessing; run once per module.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.timeout(1800)

CENTERS = ("ctrA", "ctrC")
TINY = {
    "cohort": "sheet",
    "preprocess": {"threads": 1, "n4": {"enabled": False}, "skullstrip": {"ants_refine": False}},
    "training": {
        "gpus": 0,
        "threads": 2,
        "mem_mb": 3000,
        "defaults": {"epochs": 1, "batch_size": 2, "stack": 4, "crop": [32, 32], "repeats": 1,
                     "val_every": 1, "val_max_cases": 1, "model_kwargs": {"widths": [4, 8, 16, 32]}},
        "infarct": {"model": "unet25d", "model_kwargs": {"widths": [4, 8]}, "epochs": 1},
        # the demo's nnU-Net baseline plans demo-size patches: tests/test_dag_nnunet.py runs it on a tiny budget
        "experiments": {"nnunet_2d": {"enabled": False}},
    },
    "inference": {"subsets": "leave-one-out"},
    "evaluation": {"n_boot": 100},
}


def _snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / "config" / "config.yaml"), str(configfile), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500)


def _mtimes(results: Path) -> dict[str, int]:
    """Every output file's modification time (logs excluded: each run appends its own)."""
    return {str(p.relative_to(results)): p.stat().st_mtime_ns for p in results.rglob("*")
            if p.is_file() and "logs" not in p.relative_to(results).parts}


def tiny_cohort(d: Path) -> Path:
    """A 2-center x 3-patient synthetic sheet cohort and the tiny config for it; returns the config."""
    from thrombseg.synth import generate_cohort
    from thrombseg.synth.centers import DEFAULT_CENTERS

    sheet = generate_cohort(d / "raw", n_per_center=3, seed=1, n_jobs=2,
                            centers=[c for c in DEFAULT_CENTERS if c["name"] in CENTERS])
    cfg = d / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY | {"samples": str(sheet)}))
    return cfg


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("dag")
    cfg = tiny_cohort(d)
    t0 = time.monotonic()
    res = _snakemake(d / "run", cfg)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    print(f"tiny full DAG: {time.monotonic() - t0:.0f} s")
    return d, cfg, d / "run" / "results"


def test_full_dag_ends_in_metrics_figures_and_provenance(tiny_run):
    _, _, results = tiny_run
    splits = pd.read_csv(results / "splits" / "multicentric.tsv", sep="\t")
    test = sorted(splits.loc[splits["split"] == "test", "subject"])
    assert len(test) == 2 and {s[:4] for s in test} == set(CENTERS)
    for s in test:
        pred = results / "predictions" / "upattllstm_gmd" / s
        assert (pred / f"{s}_thrombus_mask.nii.gz").is_file() and (pred / f"{s}_metrics.tsv").is_file()
    per_center = pd.read_csv(results / "metrics" / "upattllstm_gmd" / "per_center.tsv", sep="\t")
    assert set(per_center["center"]) >= set(CENTERS)
    for fig in ("per_center_dice", "per_center_detection", "missing_sequences", "size_vs_detection"):
        assert (results / "figures" / "upattllstm_gmd" / f"{fig}.png").stat().st_size > 1000
        assert (results / "figures" / "upattllstm_gmd" / f"{fig}.pdf").is_file()
    assert {p.name for p in (results / "figures" / "upattllstm_gmd" / "overlays").glob("*.png")} >= \
        {f"{c}.png" for c in CENTERS}
    assert (results / "models" / "upattllstm_gmd" / "thrombus" / "training_curve.png").is_file()
    tuned = json.loads((results / "models" / "upattllstm_gmd" / "thrombus" / "postprocess.json").read_text())
    val = sorted(splits.loc[splits["split"] == "val", "subject"])
    assert tuned["subjects"] == val and set(tuned["chosen"]) == {"min_volume_mm3"}  # chosen on val only
    assert (results / "tables" / "per_center.tex").is_file()
    assert (results / "provenance" / "provenance.json").is_file()
    assert (results / "predictions" / "dataset_description.json").is_file()
    # each protocol harmonized with landmarks of its own training patients; the audit finds no leak
    landmarks = json.loads((results / "harmonization" / "multicentric" / "landmarks.json").read_text())
    assert sorted(landmarks["fitted_on"]) == sorted(splits.loc[splits["split"] == "train", "subject"])
    audit = pd.read_csv(results / "audit" / "leakage.tsv", sep="\t", keep_default_na=False)
    assert set(audit["artefact"]) == {"harmonization landmarks", "thrombus model", "infarct model",
                                      "post-processing tuning"}
    assert (audit["test_patients_in_it"] == "").all() and (audit["n_patients"] > 0).all()


def test_audit_rule_fails_on_a_planted_leak(tiny_run):
    d, cfg, results = tiny_run
    path = results / "harmonization" / "multicentric" / "landmarks.json"
    original, stat = path.read_text(), path.stat()
    splits = pd.read_csv(results / "splits" / "multicentric.tsv", sep="\t")
    leaked = sorted(splits.loc[splits["split"] == "test", "subject"])[0]
    record = json.loads(original)
    path.write_text(json.dumps(record | {"fitted_on": [*record["fitted_on"], leaked]}))

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # nothing downstream looks out of date
    try:
        res = _snakemake(d / "run", cfg, "--forcerun", "audit", "--allowed-rules", "audit")
    finally:
        path.write_text(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        # the failed job removed the audit table: the clean run's is back for the tests that follow
        again = _snakemake(d / "run", cfg, "--forcerun", "audit", "--allowed-rules", "audit")
    assert again.returncode == 0 and (results / "audit" / "leakage.tsv").is_file(), again.stderr[-2000:]
    assert res.returncode != 0
    assert f"harmonization landmarks (landmarks fit, {path.relative_to(d / 'run')}) was fitted with its test patient(s) {leaked}" \
        in res.stdout + res.stderr


def test_report_html_builds(tiny_run):
    d, cfg, _ = tiny_run
    out = d / "report.html"
    res = _snakemake(d / "run", cfg, "--report", str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    html = out.read_text(errors="replace")
    assert out.stat().st_size > 100_000
    for name in ("per_center_dice.png", "training_curve.png", "preprocessing_qc.tsv", "provenance.json"):
        assert name in html, name


def test_single_center_rerun_reuses_models_and_touches_only_that_center(tiny_run):
    d, cfg, results = tiny_run
    before = _mtimes(results)
    splits = pd.read_csv(results / "splits" / "multicentric.tsv", sep="\t")
    redo = sorted(splits.loc[(splits["split"] == "test") & (splits["center"] == "ctrC"), "subject"])
    res = _snakemake(d / "run", cfg, "--config", "centers=[ctrC]", "--forcerun", "ingest")
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-5000:]
    assert "rule train_thrombus" not in text and "rule train_infarct" not in text
    assert "rule fit_landmarks" not in text and "rule tune_postprocess" not in text
    after = _mtimes(results)

    changed = {p for p in before if after.get(p) != before[p]}
    redone_dirs = {f"{stage}/{s}" for s in redo for stage in ("ingest", "preprocessed", "harmonized/multicentric")} | \
        {f"predictions/upattllstm_gmd/{s}" for s in redo}
    assert changed, "nothing was re-run"
    unexpected = sorted(p for p in changed if not any(p.startswith(r + "/") for r in redone_dirs))
    assert not unexpected, f"the ctrC rerun touched other outputs: {unexpected}"
    for r in redone_dirs:  # every stage of the center's test patients really re-ran
        assert any(p.startswith(r + "/") for p in changed), r

    sel = results / "selections" / "centers-ctrC"
    per_center = pd.read_csv(sel / "metrics" / "upattllstm_gmd" / "per_center.tsv", sep="\t")
    assert "ctrC" in set(per_center["center"]) and "ctrA" not in set(per_center["center"])
    assert (sel / "figures" / "upattllstm_gmd" / "per_center_dice.png").is_file()
    assert (sel / "provenance" / "config.yaml").is_file()
