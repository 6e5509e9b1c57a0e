"""Figures, tables and provenance of the report stage on a small fabricated run.

The fixture fabricates what the evaluation and inference stages write: for 2 experiments, 3 centers
with 3 test patients each, every subset of each patient's sequences (centers differ in their
protocols; center C has T2*-GRE instead of SWI), harmonized arrays on a tiny grid, thrombus truth
and predicted masks (one patient per center missed, one with a false positive), and the
aggregated tables from the real aggregation code.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from thrombseg.evaluation.aggregate import write_tables as write_metric_tables
from thrombseg.plan import experiment_labels
from thrombseg.report import figures, provenance, tables

EXPERIMENTS = {"upattllstm_gmd": "staircase", "upattllstm_nodrop": "none"}
PROTOCOLS = {"ctrA": ("swi", "phase", "dwi", "adc", "flair"), "ctrB": ("swi", "dwi", "adc", "flair"),
             "ctrC": ("t2star", "dwi", "flair")}
SHAPE = (32, 28, 12)
SPACING = (1.0, 1.0, 2.0)


def _dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * (a & b).sum() / s


def _fabricate(root: Path) -> dict:
    rng = np.random.default_rng(7)
    res = root / "results"
    subjects = {f"{c}0{i}": c for c in PROTOCOLS for i in range(1, 4)}
    truths = {}
    for k, (sub, center) in enumerate(subjects.items()):
        d = res / "harmonized" / sub
        d.mkdir(parents=True)
        truth = np.zeros(SHAPE, bool)
        x, y, z = 10 + k, 12 + (k % 3), 4 + (k % 4)
        size = 1 + k % 3  # thrombus sizes vary: 1..3 voxel half-widths
        truth[x - size:x + size + 1, y - 1:y + 2, z:z + 2] = True
        truths[sub] = truth
        yy, xx = np.meshgrid(np.arange(SHAPE[1]), np.arange(SHAPE[0]))
        brain = ((xx - 16) ** 2 / 14 ** 2 + (yy - 14) ** 2 / 12 ** 2) < 1
        for seq in PROTOCOLS[center]:
            img = rng.normal(1.0, 0.1, SHAPE).astype(np.float32) * brain[:, :, None]
            if seq in ("swi", "t2star"):
                img[truth] = 0.2  # blooming: the thrombus is dark
            np.save(d / f"{sub}_{seq}.npy", img)
        np.save(d / f"{sub}_label-thrombus.npy", truth.astype(np.uint8))
        (d / f"{sub}_arrays.json").write_text(json.dumps(
            {"affine_ras": np.diag([*SPACING, 1.0]).tolist(), "spacing_mm": list(SPACING)}))
    rows = {e: [] for e in EXPERIMENTS}
    for e_i, exp in enumerate(EXPERIMENTS):
        for k, (sub, center) in enumerate(subjects.items()):
            truth = truths[sub]
            pred = np.zeros(SHAPE, bool)
            if k % 3 != 2 or e_i == 0 and k == 2:  # the third patient of each center is missed
                pred = np.roll(truth, shift=(k + e_i) % 3, axis=0)
            if k % 4 == 1:
                pred[25:27, 20:22, 8] = True  # a false-positive component
            p = res / "predictions" / exp / sub
            p.mkdir(parents=True)
            aff = np.diag([*SPACING, 1.0])
            nib.save(nib.Nifti1Image(pred.astype(np.uint8), aff), p / f"{sub}_thrombus_mask.nii.gz")
            vol = float(truth.sum() * np.prod(SPACING))
            full_dice = _dice(pred, truth)
            seqs = sorted(PROTOCOLS[center])
            for r in range(len(seqs), 0, -1):
                for subset in itertools.combinations(seqs, r):
                    full = r == len(seqs)
                    loss = 0.0 if full else (0.08 if e_i == 0 else 0.2) * (len(seqs) - r)
                    dice = full_dice if full else max(0.0, full_dice - loss + rng.normal(0, 0.02))
                    det = float((pred & truth).any()) if full else float(dice > 0.05)
                    rows[exp].append(dict(
                        subject=sub, center=center, experiment=exp, sequence_set="+".join(subset),
                        n_sequences=r, dice=dice, detected=det, n_fp_components=int(k % 4 == 1) + int(not full and r == 1),
                        fp_volume_mm3=8.0 * (k % 4 == 1), n_fn_components=int(det == 0), fn_volume_mm3=vol * (det == 0),
                        hd95_mm=1.0 if det else 40.0, hd95_penalized=not det, volume_error_mm3=0.0,
                        lesion_f1=dice, infarct_dice=np.nan, raw_dice=dice, raw_detected=det,
                        raw_n_fp_components=1, raw_fp_volume_mm3=8.0, true_volume_mm3=vol))
    paths = {}
    for exp in EXPERIMENTS:
        df = pd.DataFrame(rows[exp])
        paths[exp] = write_metric_tables(df, res / "metrics" / exp, n_boot=200)
    sheet = root / "subjects.tsv"
    sheet.write_text("subject\tcenter\n" + "".join(f"{s}\t{c}\n" for s, c in subjects.items()))
    return {"root": root, "results": res, "paths": paths, "subjects": subjects, "sheet": sheet}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _fabricate(tmp_path_factory.mktemp("report"))


def _png_ok(path: Path, min_bytes: int = 8000):
    from matplotlib.image import imread

    assert path.is_file() and path.stat().st_size > min_bytes, path
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.05  # not a blank canvas
    pdf = path.with_suffix(".pdf")
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF")
    assert not list(path.parent.glob(".*.tmp*"))  # atomic writes leave no temporaries


def test_full_set_rows_picks_all_available_sequences(run):
    ps = pd.read_csv(run["paths"]["upattllstm_gmd"]["per_subject"], sep="\t")
    full = figures.full_set_rows(ps)
    assert len(full) == len(run["subjects"])
    for _, r in full.iterrows():
        assert r["n_sequences"] == len(PROTOCOLS[r["center"]])


def test_experiment_figures(run, tmp_path):
    exp = "upattllstm_gmd"
    res = run["results"]
    out = figures.make_experiment_figures(
        run["paths"][exp]["per_subject"], run["paths"][exp]["per_sequence_set"], res / "harmonized",
        res / "predictions" / exp, tmp_path / exp, experiment=exp, n_boot=200)
    assert set(out) == {"per_center_dice", "per_center_detection", "missing_sequences", "size_vs_detection",
                        "overlays/ctrA", "overlays/ctrB", "overlays/ctrC"}
    for png in out.values():
        _png_ok(png)


def test_comparison_figures(run, tmp_path):
    labels = experiment_labels({"defaults": {"dropout": {"schedule": "staircase"}},
                                "experiments": {"upattllstm_gmd": {},
                                                "upattllstm_nodrop": {"dropout": {"schedule": "none"}}}})
    assert labels["upattllstm_nodrop"] == "upattllstm_nodrop (no dropout)"
    assert "gradual" in labels["upattllstm_gmd"]
    out = figures.make_comparison_figures(
        [run["paths"][e]["per_subject"] for e in EXPERIMENTS],
        [run["paths"][e]["per_sequence_set"] for e in EXPERIMENTS],
        {name: tmp_path / name for name in ("ablation", "missing_sequences", "per_center_dice",
                                            "per_center_detection")},
        labels=labels, n_boot=200)
    for png in out.values():
        _png_ok(png)


def test_overlay_picks_best_median_worst(run):
    ps = pd.read_csv(run["paths"]["upattllstm_gmd"]["per_subject"], sep="\t")
    full = figures.full_set_rows(ps)
    picks = figures._pick_patients(full[full["center"] == "ctrA"])
    d = full[full["center"] == "ctrA"].sort_values("dice", ascending=False)
    assert [p[0] for p in picks] == ["best", "median", "worst"]
    assert [p[1]["subject"] for p in picks] == list(d["subject"])
    one = figures._pick_patients(full[full["subject"] == "ctrA01"])
    assert one[0][0] == "best / median / worst"


def test_empty_inputs_give_a_figure_not_a_crash(tmp_path):
    cols = ["subject", "center", "experiment", "sequence_set", "n_sequences", "dice", "detected", "true_volume_mm3"]
    empty = pd.DataFrame(columns=cols)
    _png_ok(figures.plot_per_center_dice(empty, tmp_path / "a")[0], min_bytes=2000)
    _png_ok(figures.plot_size_vs_detection(empty, tmp_path / "b")[0], min_bytes=2000)


def test_tables_numbers_and_formats(run, tmp_path):
    ps_paths = [run["paths"][e]["per_subject"] for e in EXPERIMENTS]
    pss_paths = [run["paths"][e]["per_sequence_set"] for e in EXPERIMENTS]
    out = tables.write_tables(ps_paths, pss_paths, tmp_path, n_boot=200)
    pc = pd.read_csv(out["per_center"]["tsv"], sep="\t")
    # Hand-computed: mean Dice of ctrB's patients (full sequence set) in the GMD experiment.
    ps = pd.read_csv(ps_paths[0], sep="\t")
    full_b = ps[(ps["center"] == "ctrB") & (ps["n_sequences"] == 4)]
    assert len(full_b) == 3
    row = pc[(pc["experiment"] == "upattllstm_gmd") & (pc["center"] == "ctrB")].iloc[0]
    assert row["n"] == 3
    assert row["dice_mean"] == pytest.approx(full_b["dice"].mean(), abs=1e-5)
    assert row["dice_ci_low"] <= row["dice_mean"] <= row["dice_ci_high"]
    assert row["detection_rate_mean"] == pytest.approx(full_b["detected"].mean(), abs=1e-5)
    allrow = pc[(pc["experiment"] == "upattllstm_gmd") & (pc["center"] == tables.ALL_CENTERS)].iloc[0]
    assert allrow["n"] == 9
    assert set(pc["experiment"]) == set(EXPERIMENTS) and len(pc) == 2 * 4

    md = out["per_center"]["md"].read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + len(pc)
    assert len({ln.count("|") for ln in lines}) == 1  # every row has the same number of cells
    assert re.fullmatch(r"\|(:?-{3}:?\|)+", lines[1])
    assert f"{row['dice_mean']:.2f} [{row['dice_ci_low']:.2f}, {row['dice_ci_high']:.2f}]" in md

    tex = out["per_center"]["tex"].read_text()
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"\begin{tabular}{llrrrr}" in tex and r"\end{tabular}" in tex
    body = tex[tex.index(r"\toprule"):tex.index(r"\bottomrule")]
    data_rows = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
    assert len(data_rows) == 1 + len(pc) and all(ln.count("&") == 5 for ln in data_rows)
    assert r"upattllstm\_gmd" in tex and r"95 \% CI" in tex and "_gmd" not in tex.replace(r"\_", "")

    pss = pd.read_csv(out["per_sequence_set"]["tsv"], sep="\t")
    src = pd.read_csv(pss_paths[1], sep="\t")
    want = src[(src["sequence_set"] == "dwi+flair") & (src["metric"] == "dice")].iloc[0]
    got = pss[(pss["experiment"] == "upattllstm_nodrop") & (pss["sequence_set"] == "dwi+flair")].iloc[0]
    assert got["dice_mean"] == pytest.approx(want["mean"], abs=1e-5) and got["n"] == want["n_subjects"] == 9
    assert pss.groupby("experiment")["n_sequences"].apply(lambda s: s.is_monotonic_decreasing).all()
    assert out["per_sequence_set"]["md"].read_text().count("\n|") >= len(pss)


def test_provenance(run, tmp_path):
    cfg = {"results": "results", "training": {"experiments": {"a": {"protocol": "multicentric"}}}, "centers": []}
    paths = provenance.write_provenance(tmp_path / "prov", cfg, run["sheet"])
    import hashlib

    import yaml

    rec = json.loads(paths["provenance"].read_text())
    assert rec["sheet"]["sha256"] == hashlib.sha256(run["sheet"].read_bytes()).hexdigest()
    assert set(rec["packages"]) == set(provenance.PACKAGES)
    assert rec["packages"]["numpy"] == np.__version__ and rec["packages"]["pandas"] == pd.__version__
    assert rec["packages"]["thrombseg"] != provenance.NOT_INSTALLED
    assert rec["python"] and rec["platform"] and rec["timestamp"]
    assert yaml.safe_load(paths["config"].read_text()) == cfg
    assert re.fullmatch(r"[0-9a-f]{40}", rec["git"]["commit"]) or rec["git"]["commit"] == "unknown"
    # Absent packages and non-git folders are reported plainly.
    assert provenance.package_versions(["surely-not-a-package-xyz"]) == {"surely-not-a-package-xyz": "not installed"}
    assert provenance.git_info(tmp_path) == {"commit": "unknown", "dirty": "unknown"}
    missing = provenance.write_provenance(tmp_path / "p2", cfg, tmp_path / "nope.tsv")
    assert json.loads(missing["provenance"].read_text())["sheet"]["sha256"] == "unknown"


def test_dataset_description(tmp_path):
    p = provenance.write_dataset_description(tmp_path / "harmonized", "thrombseg harmonized",
                                             code_url="https://example.org/thrombseg")
    d = json.loads(p.read_text())
    assert d["BIDSVersion"] == "1.9.0" and d["DatasetType"] == "derivative" and d["Name"] == "thrombseg harmonized"
    assert d["GeneratedBy"][0]["Name"] == "thrombseg" and d["GeneratedBy"][0]["Version"]
    assert d["GeneratedBy"][0]["CodeURL"] == "https://example.org/thrombseg"
    d2 = json.loads(provenance.write_dataset_description(tmp_path / "x", "x").read_text())
    assert "CodeURL" not in d2["GeneratedBy"][0]


def test_ablation_rows_compare_the_same_patients(run):
    ps = pd.concat([pd.read_csv(run["paths"][e]["per_subject"], sep="\t") for e in EXPERIMENTS])
    rows = figures.ablation_rows(ps)
    full = figures.full_set_rows(ps).set_index(["experiment", "subject"])
    for exp in EXPERIMENTS:
        r = rows[rows["experiment"] == exp]
        # x = 0 is every patient's full set: the same values as the per-center figures use.
        r0 = r[r["withheld"] == 0].set_index("subject")
        assert set(r0.index) == set(run["subjects"])
        for sub, row in r0.iterrows():
            assert row["dice"] == pytest.approx(full.loc[(exp, sub), "dice"])
        # A patient appears at every count its own protocol allows (down to one sequence left).
        for w, d in r.groupby("withheld"):
            assert set(d["subject"]) == {s for s, c in run["subjects"].items() if len(PROTOCOLS[c]) > w}


def test_single_experiment_comparison_says_so(run, tmp_path):
    lab = {"a": "a (no dropout)", "b": "b (fixed dropout)"}
    assert "only one experiment" in figures._single_note(["a"], lab, True)
    assert "a (no dropout)" in figures._single_note(["a"], lab, True)
    assert figures._single_note(["a", "b"], lab, True) == ""
    assert figures._single_note(["a"], lab, False) == ""  # per-experiment figures: no note
    exp = "upattllstm_gmd"
    out = figures.make_comparison_figures(
        [run["paths"][exp]["per_subject"]], [run["paths"][exp]["per_sequence_set"]],
        {name: tmp_path / name for name in ("ablation", "missing_sequences", "per_center_dice",
                                            "per_center_detection")}, n_boot=50)
    for png in out.values():
        _png_ok(png)


def _arm_rows(experiment: str, hits: dict, patients: int = 10) -> pd.DataFrame:
    """Per-subject rows: each patient has its full set (2 sequences) and both one-missing subsets;
    ``hits[withheld]`` = (detected, dice) of every row at that count."""
    rows = []
    for i in range(patients):
        for sset, n in (("dwi+swi", 2), ("swi", 1), ("dwi", 1)):
            det, dice = hits[2 - n]
            rows.append({"experiment": experiment, "center": "ctrA", "subject": f"p{i:02d}", "sequence_set": sset,
                         "n_sequences": n, "dice": dice, "detected": det, "n_fp_components": 0})
    return pd.DataFrame(rows)


def test_paired_ablation_rows_pair_the_same_patients(tmp_path):
    ps = pd.concat([
        _arm_rows("gmd", {0: (1, 0.6), 1: (1, 0.5)}),
        _arm_rows("none", {0: (1, 0.6), 1: (0, 0.1)}),     # equal with every sequence, worse missing one
        _arm_rows("other_protocol", {0: (1, 0.6), 1: (1, 0.5)}).assign(center="ctrB"),  # no shared patient
    ])
    paired = figures.paired_ablation_rows(ps, "gmd", n_boot=200)
    assert set(paired["arm"]) == {"none"}
    dice = paired[paired["metric"] == "dice"].set_index("withheld")
    det = paired[paired["metric"] == "detected"].set_index("withheld")
    assert dice.loc[0, "difference"] == pytest.approx(0) and dice.loc[1, "difference"] == pytest.approx(0.4)
    assert dice.loc[1, "ci_low"] == pytest.approx(0.4) and dice.loc[1, "n_patients"] == 10
    # every patient loses detection without a sequence: 10 discordant patients, all for gmd
    assert (det.loc[1, "a_only"], det.loc[1, "b_only"]) == (10, 0)
    assert det.loc[1, "p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert (det.loc[0, "a_only"], det.loc[0, "b_only"], det.loc[0, "p_value"]) == (0, 0, 1.0)
    png, _ = figures.plot_dropout_ablation(ps, tmp_path / "ablation", {"gmd": "gmd", "none": "none"}, n_boot=50)
    _png_ok(png)


# ------------------------------------------------------------- thrombus-negative patients
def _presence_rows(with_prob: bool = True) -> pd.DataFrame:
    """One center, full set only: 6 patients with a thrombus and 4 without; probabilities chosen per bin."""
    probs = [0.05, 0.15, 0.12, 0.55, 0.95, 1.0, 0.9, 0.3, 0.08, 0.6]
    present = [False, False, True, True, True, True, True, True, False, False]
    rows = []
    for i, (p, t) in enumerate(zip(probs, present)):
        pred = p >= 0.5
        rows.append({"subject": f"s{i}", "center": "ctrA", "experiment": "e", "sequence_set": "dwi+swi",
                     "n_sequences": 2, "dice": 0.5 if t and pred else 0.0, "detected": float(pred) if t else np.nan,
                     "n_fp_components": int(pred and not t), "truth_present": t, "pred_present": pred,
                     "presence_prob": p if with_prob else np.nan})
    return pd.DataFrame(rows)


def test_calibration_bins_known_answer():
    d = _presence_rows()
    cb = figures.calibration_bins(d["presence_prob"], d["truth_present"], n_bins=10).set_index("bin")
    assert list(cb.index) == [0, 1, 3, 5, 6, 9]  # 1.0 falls in the last bin
    assert cb.loc[0, "n"] == 2 and cb.loc[0, "observed"] == 0.0 and cb.loc[0, "mean_prob"] == pytest.approx(0.065)
    assert cb.loc[1, "n"] == 2 and cb.loc[1, "observed"] == 0.5 and cb.loc[1, "mean_prob"] == pytest.approx(0.135)
    assert cb.loc[9, "n"] == 3 and cb.loc[9, "observed"] == 1.0 and cb.loc[9, "mean_prob"] == pytest.approx(2.85 / 3)
    assert cb.loc[6, "observed"] == 0.0 and cb["n"].sum() == len(d)
    assert (cb["ci_low"] <= cb["observed"]).all() and (cb["observed"] <= cb["ci_high"]).all()
    assert (cb.loc[5, "low"], cb.loc[5, "high"]) == (pytest.approx(0.5), pytest.approx(0.6))
    two = figures.calibration_bins(d["presence_prob"], d["truth_present"], n_bins=2)
    assert list(two["n"]) == [5, 5] and list(two["observed"]) == [pytest.approx(0.4), pytest.approx(0.8)]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        figures.calibration_bins([1.2], [1])


def test_calibration_figure_and_its_skip_note(tmp_path):
    _png_ok(figures.plot_presence_calibration(_presence_rows(), tmp_path / "cal")[0])
    # as rule figures calls it: the per-subject TSV's path and the output's .png path
    _presence_rows().to_csv(tmp_path / "per_subject.tsv", sep="\t", index=False)
    png, _ = figures.plot_presence_calibration(str(tmp_path / "per_subject.tsv"), str(tmp_path / "rule.png"),
                                               {"e": "e (label)"})
    assert png == tmp_path / "rule.png"
    _png_ok(png)
    # no probability anywhere: a figure that says so, not a crash
    png, _ = figures.plot_presence_calibration(_presence_rows(with_prob=False), tmp_path / "none")
    _png_ok(png, min_bytes=2000)
    png, _ = figures.plot_presence_calibration(_presence_rows().drop(columns="presence_prob"), tmp_path / "absent")
    _png_ok(png, min_bytes=2000)
    assert "nothing to calibrate" in figures.NO_PRESENCE_PROB_NOTE


def test_tables_show_patient_level_columns_with_negatives(tmp_path):
    ps = _presence_rows()
    pc = tables.per_center_table(ps, n_boot=200)
    row = pc[pc["center"] == tables.ALL_CENTERS].iloc[0]
    assert row["patient_sensitivity_mean"] == pytest.approx(4 / 6)  # probabilities >= 0.5 among thrombi
    assert row["patient_specificity_mean"] == pytest.approx(3 / 4)
    assert row["n_fp_components_per_negative_mean"] == pytest.approx(1 / 4)
    from sklearn.metrics import roc_auc_score

    assert row["presence_auc_mean"] == pytest.approx(roc_auc_score(ps["truth_present"], ps["presence_prob"]))
    shown = tables.format_table(pc, ["experiment", "center"], ["Experiment", "Center"])
    assert {"Sensitivity [95 % CI]", "Specificity [95 % CI]", "FP components / negative [95 % CI]",
            "Presence AUC [95 % CI]"} <= set(shown.columns)
    # thrombus-positive patients only: specificity, FP per negative and AUC are NaN and not shown
    pos = tables.per_center_table(ps[ps["truth_present"]], n_boot=50)
    assert pos[["patient_specificity_mean", "presence_auc_mean"]].isna().all().all()
    cols = set(tables.format_table(pos, ["experiment", "center"], ["Experiment", "Center"]).columns)
    assert "Sensitivity [95 % CI]" in cols and "Specificity [95 % CI]" not in cols and "Presence AUC [95 % CI]" not in cols
    # the evaluation stage's per_sequence_set.tsv carries them into the per-sequence-set table
    paths = write_metric_tables(ps, tmp_path / "m", n_boot=100)
    pss = tables.per_sequence_set_table(paths["per_sequence_set"])
    assert pss.iloc[0]["patient_specificity_mean"] == pytest.approx(3 / 4)
