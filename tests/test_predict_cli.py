"""``thrombseg predict`` on one new patient, ``predict-harmonized``, ``evaluate`` and ``aggregate``.

One synthetic patient (thrombseg.synth, one center) is downsampled to 3 mm so that the real
preprocessing (ANTs skull strip, registration) runs in a few seconds; its SWI is stored LPS so the
way back to the user's voxel layout is exercised. Models are tiny untrained networks in the
``model.pt`` format of the trainer; landmarks are fitted with ``fit_landmarks`` on the same patient.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("ants")

from thrombseg.cli import main  # noqa: E402
from thrombseg.core.errors import UserError  # noqa: E402
from thrombseg.core.fs import OutputError  # noqa: E402
from thrombseg.inference.cli import results_files  # noqa: E402
from thrombseg.inference.patient import predict_patient, to_native  # noqa: E402
from thrombseg.inference.sequences import check_sequences, known_sequences  # noqa: E402
from thrombseg.inference.settings import InferenceConfig, InferenceError  # noqa: E402
from thrombseg.models.checkpoint import build_network  # noqa: E402
from thrombseg.training.config import TrainConfig  # noqa: E402

FAST = {"threads": 2, "qc": {"montage": False}, "n4": {"enabled": False}, "registration": {"reg_spacing_mm": 4.0}}
TINY = {"model": "unet25d", "model_kwargs": {"widths": [4, 8]}, "stack": 4}


def _ball(img: nib.Nifti1Image, centre_vox, radius_mm) -> nib.Nifti1Image:
    zooms = np.asarray(img.header.get_zooms()[:3])
    g = np.stack(np.meshgrid(*[np.arange(n) for n in img.shape[:3]], indexing="ij"), -1)
    lab = (np.linalg.norm((g - np.asarray(centre_vox)) * zooms, axis=-1) <= radius_mm).astype(np.uint8)
    return nib.Nifti1Image(lab, img.affine)


def _save(img: nib.Nifti1Image, path: Path) -> str:
    nib.save(img, str(path))
    return str(path)


def _model(path: Path, modalities, seed=0) -> Path:
    torch.manual_seed(seed)
    cfg = TrainConfig.from_dict(TINY | {"modalities": list(modalities)})
    torch.save({"model": build_network(cfg).state_dict(), "config": cfg.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """Raw 3 mm inputs (SWI stored LPS), ball labels, landmarks, tiny models, a preprocessed copy."""
    from nibabel.processing import resample_to_output

    from thrombseg.ingest import ingest_subject
    from thrombseg.preprocessing.harmonize import fit_landmarks
    from thrombseg.preprocessing.pipeline import preprocess_subject
    from thrombseg.synth import DEFAULT_CENTERS, generate_cohort

    root = tmp_path_factory.mktemp("predict")
    sheet = generate_cohort(root / "synth", n_per_center=1, centers=[DEFAULT_CENTERS[0]], seed=1)
    row = pd.read_csv(sheet, sep="\t", dtype=str).fillna("").iloc[0]
    raw = root / "raw"
    raw.mkdir()
    files = {}
    for seq, zooms in (("swi", (3, 3, 3)), ("dwi", (3, 3, 5)), ("adc", (3, 3, 5))):
        img = resample_to_output(nib.load(str(sheet.parent / row[seq])), zooms, order=1)
        if seq == "swi":  # the user's file is LPS: outputs must come back LPS with this affine
            img = img.as_reoriented(nib.orientations.ornt_transform(
                nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt("LPS")))
        files[seq] = _save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine), raw / f"{seq}.nii.gz")
    swi, dwi = nib.load(files["swi"]), nib.load(files["dwi"])
    labels = {"thrombus_mask": _save(_ball(swi, np.array(swi.shape) // 2 + [4, 3, 2], 7.0), raw / "thr.nii.gz"),
              "infarct_mask": _save(_ball(dwi, np.array(dwi.shape) // 2 + [-5, 4, 0], 12.0), raw / "les.nii.gz")}
    ingest_subject({"subject": "ref", "center": "c"} | files | labels, raw / "sheet.tsv", root / "ingest" / "ref")
    preprocess_subject(root / "ingest", "ref", root / "pre", FAST)
    lm = fit_landmarks(root / "pre", ["ref"], root / "landmarks.json")
    return {"root": root, "files": files, "labels": labels, "landmarks": lm,
            "model": _model(root / "thrombus.pt", ["swi", "dwi"]),
            "infarct": _model(root / "infarct.pt", ["dwi", "adc"], seed=1)}


@pytest.fixture(scope="module")
def predicted(patient, tmp_path_factory):
    """One full ``thrombseg predict`` run through the CLI (work folders kept for checks)."""
    import yaml

    root = tmp_path_factory.mktemp("out")
    conf = root / "config.yaml"
    conf.write_text(yaml.safe_dump({"preprocess": FAST, "inference": {"min_size_voxels": 2}}))
    out = root / "p1"
    f = patient["files"]
    rc = main(["predict", str(out), "--swi", f["swi"], "--dwi", f["dwi"], "--adc", f["adc"],
               "--model", str(patient["model"]), "--infarct-model", str(patient["infarct"]),
               "--landmarks", str(patient["landmarks"]), "--config", str(conf), "--subject", "p1",
               "--keep-work", "--threads", "2", "--device", "cpu"])
    assert rc == 0
    return out


def test_reference_grid_outputs(predicted):
    grid = nib.load(str(predicted / "work" / "preprocessed" / "p1" / "p1_brainmask.nii.gz"))
    for name in ("thrombus_prob", "thrombus_mask", "infarct_mask"):
        img = nib.load(str(predicted / f"p1_{name}.nii.gz"))
        assert img.shape == grid.shape and np.allclose(img.affine, grid.affine, atol=1e-4), name
    prob = nib.load(str(predicted / "p1_thrombus_prob.nii.gz")).get_fdata()
    assert 0 <= prob.min() and prob.max() <= 1
    s = json.loads((predicted / "p1_prediction.json").read_text())
    assert s["sequences_used"] == ["dwi", "swi"] and s["infarct_sequences_used"] == ["adc", "dwi"]
    assert s["device"] == "cpu" and s["inference"]["min_size_voxels"] == 2
    assert {"ingest", "preprocess", "harmonize", "predict", "native", "total"} <= set(s["timings_s"])
    assert s["thrombus_volume_mm3"] >= 0 and s["thrombus_n_components"] <= 1
    assert s["thrombus_present"] == (s["thrombus_volume_mm3"] > 0) and s["presence_prob"] is None  # rule selection
    assert not [w for w in s["warnings"] if "Nyul" in w]  # landmarks were fitted for every input
    assert s["ood_warnings"] == [] and s["out_of_distribution"] is False  # the profile's own patient


def test_predict_can_answer_no_thrombus(patient, tmp_path):
    """A tuned candidate scorer whose threshold no candidate reaches: an empty mask, and the JSON says
    "no thrombus" with the presence probability it was decided on."""
    import yaml

    scorer = {"model": "logistic_regression", "features": ["prob_max"], "mean": [0.0], "scale": [1.0],
              "coef": [1.0], "intercept": -10.0}  # every score below 2e-4 (prob_max <= 1)
    pp = tmp_path / "postprocess.json"
    pp.write_text(json.dumps({"chosen": {"selection": "score", "presence_threshold": 0.5, "scorer": scorer}}))
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump({"preprocess": FAST, "inference": {"min_size_voxels": 2, "threshold": 0.01,
                                                                         "regrow_threshold": 0.01}}))
    f, out = patient["files"], tmp_path / "p2"
    assert main(["predict", str(out), "--swi", f["swi"], "--dwi", f["dwi"], "--model", str(patient["model"]),
                 "--landmarks", str(patient["landmarks"]), "--config", str(conf), "--subject", "p2",
                 "--postprocess", str(pp), "--threads", "2", "--device", "cpu"]) == 0
    s = json.loads((out / "p2_prediction.json").read_text())
    assert s["thrombus_present"] is False and s["thrombus_volume_mm3"] == 0 and s["thrombus_n_components"] == 0
    assert 0.0 < s["presence_prob"] <= 2e-4  # threshold 0.01 leaves the random model candidates to score
    assert not nib.load(str(out / "p2_thrombus_mask.nii.gz")).get_fdata().any()
    assert not nib.load(str(out / "native" / "p2_space-swi_thrombus_mask.nii.gz")).get_fdata().any()
    assert nib.load(str(out / "p2_thrombus_prob.nii.gz")).get_fdata().max() >= 0.01  # the map is kept as it is


def test_native_outputs_have_input_shape_and_affine(patient, predicted):
    for seq, path in patient["files"].items():
        src = nib.load(path)
        for name in ("thrombus_prob", "thrombus_mask", "infarct_mask"):
            img = nib.load(str(predicted / "native" / f"p1_space-{seq}_{name}.nii.gz"))
            assert img.shape == src.shape and np.allclose(img.affine, src.affine, atol=1e-5), (seq, name)
    assert nib.aff2axcodes(nib.load(str(predicted / "native" / "p1_space-swi_thrombus_mask.nii.gz")).affine) == \
        ("L", "P", "S")
    prob = nib.load(str(predicted / "native" / "p1_space-dwi_thrombus_prob.nii.gz")).get_fdata()
    assert 0 <= prob.min() and prob.max() <= 1


def test_to_native_recovers_labels_in_user_space(patient):
    """Labels moved to the grid by preprocessing come back onto the user's voxels (LPS SWI, moved DWI)."""
    from thrombseg.preprocessing._io import load_image

    pre = patient["root"] / "pre" / "ref"
    meta = json.loads((pre / "ref_preproc.json").read_text())
    grid = load_image(pre / "ref_brainmask.nii.gz", allow_constant=True)
    for name, seq, src in (("thrombus", "swi", "thrombus_mask"), ("infarct", "dwi", "infarct_mask")):
        arr = load_image(pre / f"ref_{name}.nii.gz", allow_constant=True).numpy()
        mat = (meta["registration"].get(seq) or {}).get("matrix")
        back, aff = to_native({"x_mask": arr}, grid, patient["root"] / "ingest" / "ref" / f"ref_{seq}.nii.gz",
                              patient["files"][seq], mat)["x_mask"]
        truth = nib.load(patient["labels"][src]).get_fdata() > 0
        dice = 2 * (back.astype(bool) & truth).sum() / (back.sum() + truth.sum())
        assert back.shape == truth.shape and np.allclose(aff, nib.load(patient["files"][seq]).affine)
        assert dice > 0.85, (name, dice)


@pytest.mark.parametrize("case", ["swi_x10", "old_landmarks"])
def test_out_of_distribution_in_the_prediction_json(patient, tmp_path, caplog, case):
    """SWI stored 10 times brighter than the training patient's: flagged; landmarks fitted before the
    guard: predicted as before, with a note and ``out_of_distribution`` null."""
    swi, landmarks = patient["files"]["swi"], patient["landmarks"]
    if case == "swi_x10":
        img = nib.load(swi)
        swi = _save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32) * 10, img.affine), tmp_path / "swi10.nii.gz")
    else:
        old = json.loads(Path(landmarks).read_text())
        del old["profile"]
        landmarks = tmp_path / "old_landmarks.json"
        landmarks.write_text(json.dumps(old))
    with caplog.at_level("WARNING", logger="thrombseg.inference"):
        s = predict_patient({"swi": swi}, tmp_path / "o", patient["model"], landmarks, preprocess_config=FAST,
                            icfg=InferenceConfig(device="cpu"), subject="p2")
    assert json.loads((tmp_path / "o" / "p2_prediction.json").read_text())["ood_warnings"] == s["ood_warnings"]
    if case == "swi_x10":
        assert s["out_of_distribution"] is True and len(s["ood_warnings"]) == 1, s["ood_warnings"]
        assert s["ood_warnings"][0].startswith("swi: raw intensities far outside the training patients'")
        assert "out of distribution: swi: raw intensities" in caplog.text
    else:
        assert s["out_of_distribution"] is None and s["ood_warnings"] == []
        assert [w for w in s["warnings"] if "no training profile" in w and "old_landmarks.json" in w]


def test_sequence_checks():
    assert known_sequences(["swi", "dwi"]) == {"swi": "swi", "t2star": "swi", "dwi": "dwi"}
    check_sequences({"t2star", "dwi"}, ["swi", "dwi"])  # T2* stands in for SWI
    with pytest.raises(InferenceError, match=r"not trained with flair: it knows swi, t2star \(as swi\), dwi"):
        check_sequences({"swi", "flair"}, ["swi", "dwi"])
    with pytest.raises(InferenceError, match="none of the given sequences"):
        check_sequences({"adc"}, ["swi", "dwi"], ["dwi", "adc"])


def test_unknown_and_unusable_sequences_fail_before_any_work(patient, tmp_path):
    f, kw = patient["files"], {"thrombus_model": patient["model"], "landmarks": patient["landmarks"]}
    with pytest.raises(InferenceError, match="was not trained with flair.*it knows swi"):
        predict_patient({"swi": f["swi"], "flair": f["dwi"]}, tmp_path / "o", **kw)
    with pytest.raises(InferenceError, match="none of the given sequences"):
        predict_patient({"adc": f["adc"]}, tmp_path / "o", infarct_model=patient["infarct"], **kw)
    with pytest.raises(InferenceError, match="unknown sequence 'swan'"):
        predict_patient({"swan": f["swi"]}, tmp_path / "o", **kw)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("what", ["image", "model", "landmarks", "garbage"])
def test_cli_bad_file_exits_2_with_one_line(patient, tmp_path, capsys, what):
    f = patient["files"]
    args = {"--swi": f["swi"], "--model": str(patient["model"]), "--landmarks": str(patient["landmarks"])}
    bad = tmp_path / "missing.nii.gz"
    if what == "garbage":
        bad.write_text("not a nifti")
    args[{"image": "--swi", "model": "--model", "landmarks": "--landmarks", "garbage": "--swi"}[what]] = str(bad)
    rc = main(["predict", str(tmp_path / "out")] + [x for kv in args.items() for x in kv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "missing.nii.gz" in err, err
    assert err.startswith("thrombseg predict: error:")
    assert not (tmp_path / "out").exists()


def test_bad_inference_settings_are_rejected_when_read(patient, tmp_path, capsys):
    """Checked when the settings are built, not after preprocessing deep inside post-processing."""
    with pytest.raises(InferenceError, match=r"regrow_threshold \(0.3\) must not exceed threshold \(0.2\)"):
        InferenceConfig(threshold=0.2)
    with pytest.raises(InferenceError, match="min_size_voxels must be >= 0"):
        InferenceConfig.from_dict({"min_size_voxels": -1})
    with pytest.raises(InferenceError, match="same_side_mm must be >= 0"):
        InferenceConfig.from_dict({"same_side_mm": "no"})
    with pytest.raises(InferenceError, match="unknown key"):
        InferenceConfig.from_dict({"treshold": 0.5})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("inference: {threshold: 2}\n")
    rc = main(["predict", str(tmp_path / "out"), "--swi", str(patient["files"]["swi"]), "--model",
               str(patient["model"]), "--landmarks", str(patient["landmarks"]), "--config", str(cfg)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "threshold must be a number in (0, 1]" in err
    assert not (tmp_path / "out").exists()


def test_failure_mid_pipeline_leaves_no_output(patient, tmp_path):
    """A constant image passes the cheap checks and fails in preprocessing: nothing is left behind."""
    flat = _save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    out = tmp_path / "res" / "p"
    with pytest.raises(ValueError, match="flat.nii.gz.*constant"):
        predict_patient({"swi": flat}, out, patient["model"], patient["landmarks"], preprocess_config=FAST)
    assert not list((tmp_path / "res").iterdir())


def test_refuses_to_replace_a_foreign_folder(patient, tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(OutputError, match="not written by thrombseg"):
        predict_patient({"swi": patient["files"]["swi"]}, tmp_path, patient["model"], patient["landmarks"],
                        overwrite=True)
    assert (tmp_path / "keep.txt").is_file()


def test_rerun_keeps_a_users_annotation(patient, predicted, capsys):
    """Before: re-running predict into an earlier prediction deleted a file and a folder the user added."""
    f = patient["files"]
    cmd = ["predict", str(predicted), "--swi", f["swi"], "--dwi", f["dwi"], "--model", str(patient["model"]),
           "--landmarks", str(patient["landmarks"]), "--subject", "p1", "--device", "cpu"]
    assert main(cmd) == 2
    assert "give --overwrite" in capsys.readouterr().err
    (predicted / "notes").mkdir()
    (predicted / "notes" / "annotation.nii.gz").write_text("a user's annotation")
    try:
        for extra in ([], ["--overwrite"]):
            assert main(cmd + extra) == 2
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and "notes/annotation.nii.gz" in err
            assert (predicted / "notes" / "annotation.nii.gz").read_text() == "a user's annotation"
    finally:
        shutil.rmtree(predicted / "notes")


def test_a_model_file_that_runs_code_is_refused(patient, tmp_path, capsys):
    """Before: a crafted .pt given to --model ran its code before the 'not a state dict' error."""
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode(str(marker)), "config": {}}, evil)
    f = patient["files"]
    rc = main(["predict", str(tmp_path / "out"), "--swi", f["swi"], "--dwi", f["dwi"], "--model", str(evil),
               "--landmarks", str(patient["landmarks"]), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "never runs code from a model file" in err, err
    assert str(evil) in err and not marker.exists() and not (tmp_path / "out").exists()


class _RunsCode:
    """Unpickling this calls open(path, 'w'): what a hostile checkpoint could do with any function."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_evaluate_cli(predicted, tmp_path, capsys):
    import nibabel as nib

    nat = predicted / "native"
    m = str(nat / "p1_space-swi_thrombus_mask.nii.gz")
    ref = nib.load(m)
    pred, truth = np.zeros(ref.shape, np.uint8), np.zeros(ref.shape, np.uint8)
    pred[10:14, 10:14, 5:7] = 1  # 32 voxels
    truth[12:16, 10:14, 5:7] = 1  # 32 voxels, 16 shared -> Dice 0.5
    for name, arr in (("pred", pred), ("truth", truth)):
        nib.save(nib.Nifti1Image(arr, ref.affine), tmp_path / f"{name}.nii.gz")
    inf = str(nat / "p1_space-dwi_infarct_mask.nii.gz")
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "truth.nii.gz"),
                 "--infarct-pred", inf, "--infarct-truth", inf]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["dice"] == pytest.approx(0.5) and row["detected"] == 1.0 and row["overlap_voxels"] == 16
    assert row["infarct_dice"] in (1.0, None)  # identical infarct masks (None: both empty)
    assert main(["evaluate", m, str(nat / "p1_space-dwi_thrombus_mask.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not on the grid" in err


def test_aggregate_cli(tmp_path, capsys):
    df = pd.DataFrame({"subject": ["a", "b", "c"], "center": ["x", "x", "y"], "experiment": "e",
                       "sequence_set": "swi", "dice": [0.5, 0.7, 0.1], "detected": [1.0, 1.0, 0.0]})
    paths = []
    for s, g in df.groupby("subject"):
        paths.append(tmp_path / f"{s}_metrics.tsv")
        g.to_csv(paths[-1], sep="\t", index=False)
    assert main(["aggregate", str(tmp_path / "tables"), *map(str, paths), "--n-boot", "20"]) == 0
    pc = pd.read_csv(tmp_path / "tables" / "per_center.tsv", sep="\t")
    assert set(pc["center"]) == {"x", "y"}
    assert main(["aggregate", str(tmp_path / "t2"), str(paths[0]), str(paths[0])]) == 2  # duplicated rows
    (tmp_path / "bin.tsv").write_bytes(b"\xff\xfe\x00garbage")
    assert main(["aggregate", str(tmp_path / "t3"), str(tmp_path / "bin.tsv")]) == 2
    assert "bin.tsv: not a readable metrics table" in capsys.readouterr().err


def test_predict_harmonized_cli(patient, predicted, tmp_path, capsys):
    rc = main(["predict-harmonized", str(predicted / "work" / "harmonized"), "p1", "c", str(patient["model"]),
               str(tmp_path / "h"), "--subsets", "leave-one-out", "--device", "cpu"])
    assert rc == 0
    assert (tmp_path / "h" / "p1_thrombus_mask.nii.gz").is_file()
    assert len(pd.read_csv(tmp_path / "h" / "p1_metrics.tsv", sep="\t")) == 3  # dwi+swi, swi, dwi
    ood = json.loads((tmp_path / "h" / "p1_ood.json").read_text())
    assert ood["out_of_distribution"] is False and ood["ood_warnings"] == [] and ood["note"] is None
    capsys.readouterr()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(patient["model"].read_bytes()[:100])
    rc = main(["predict-harmonized", str(predicted / "work" / "harmonized"), "p1", "c", str(bad), str(tmp_path / "h2")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "truncated.pt: not a readable checkpoint" in err


def test_tune_postprocess_cli(patient, predicted, tmp_path, capsys):
    """Choose post-processing on 'val' rows, then predict with the choice."""
    import shutil

    harm = tmp_path / "harmonized"  # the predicted patient, given a thrombus annotation
    shutil.copytree(predicted / "work" / "harmonized" / "p1", harm / "p1")
    shape = np.load(harm / "p1" / "p1_swi.npy", mmap_mode="r").shape
    lab = np.zeros(shape, np.uint8)
    lab[shape[0] // 2:shape[0] // 2 + 3, shape[1] // 2:shape[1] // 2 + 3, shape[2] // 2] = 1
    np.save(harm / "p1" / "p1_label-thrombus.npy", lab)
    harm = str(harm)
    splits = tmp_path / "splits.tsv"
    pd.DataFrame({"subject": ["p1"], "center": ["c"], "split": ["val"]}).to_csv(splits, sep="\t", index=False)
    out = tmp_path / "pp.json"
    assert main(["tune-postprocess", harm, str(splits), str(patient["model"]), str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["subjects"] == ["p1"] and len(r["candidates"]) == 4  # the configured value, then the grid's 3
    assert set(r["chosen"]) == {"min_volume_mm3"} and r["chosen"]["min_volume_mm3"] in (None, 20, 40, 80)
    capsys.readouterr()
    assert main(["predict-harmonized", harm, "p1", "c", str(patient["model"]), str(tmp_path / "h"),
                 "--postprocess", str(out)]) == 0
    pd.DataFrame({"subject": ["p1"], "center": ["c"], "split": ["test"]}).to_csv(splits, sep="\t", index=False)
    assert main(["tune-postprocess", harm, str(splits), str(patient["model"]), str(tmp_path / "x.json")]) == 2
    assert "no 'val' patients" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_results_folder_lookup(patient, tmp_path):
    import shutil

    import yaml

    r = tmp_path / "results"
    for d in ("models/exp1/thrombus", "models/infarct/multicentric", "models/infarct/monocentric-A", "provenance"):
        (r / d).mkdir(parents=True)
    shutil.copy(patient["model"], r / "models/exp1/thrombus/model.pt")
    for d in ("multicentric", "monocentric-A"):
        shutil.copy(patient["infarct"], r / "models/infarct" / d / "model.pt")
    (r / "provenance/config.yaml").write_text(yaml.safe_dump({
        "preprocess": {"threads": 1}, "inference": {"threshold": 0.4},
        "training": {"experiments": {"exp1": {"protocol": "monocentric-A"}}}}))
    found = results_files(r)
    assert found["experiment"] == "exp1" and found["infarct_model"] == r / "models/infarct/monocentric-A/model.pt"
    # the landmarks of the experiment's protocol: its patients were harmonized with them
    assert found["landmarks"] == r / "harmonization/monocentric-A/landmarks.json"
    assert found["inference"]["threshold"] == 0.4
    assert found["preprocess"] == {"threads": 1} and found["postprocess"] is None
    (r / "models/exp1/thrombus/postprocess.json").write_text(json.dumps({"chosen": {"min_size_voxels": 5}}))
    assert results_files(r)["postprocess"] == r / "models/exp1/thrombus/postprocess.json"
    (r / "provenance/config.yaml").unlink()  # no run config: the only landmarks there, or a clear refusal
    shutil.rmtree(r / "models/infarct/multicentric")
    for d in ("multicentric", "monocentric-A"):
        (r / "harmonization" / d).mkdir(parents=True)
        (r / "harmonization" / d / "landmarks.json").write_text("{}")
    with pytest.raises(UserError, match="give --landmarks"):
        results_files(r)
    shutil.rmtree(r / "harmonization/multicentric")
    assert results_files(r)["landmarks"] == r / "harmonization/monocentric-A/landmarks.json"


def test_results_folder_lookup_of_an_nnunet_experiment(patient, tmp_path, capsys):
    """An nnU-Net baseline's files resolve to its final checkpoint (benchmarks/compare.py predicts with
    it); ``thrombseg predict --results`` refuses it in one line, and the default stays the thrombseg model."""
    import shutil

    import yaml

    from thrombseg.inference.cli import trained_experiments
    from thrombseg.plan import nnunet_settings

    r = tmp_path / "results"
    (r / "models/exp1/thrombus").mkdir(parents=True)
    shutil.copy(patient["model"], r / "models/exp1/thrombus/model.pt")
    training = {"experiments": {"exp1": {"protocol": "multicentric"},
                                "nn": {"model": "nnunet", "protocol": "multicentric", "epochs": 1}}}
    (r / "provenance").mkdir()
    (r / "provenance/config.yaml").write_text(yaml.safe_dump({"training": training}))
    assert trained_experiments(r) == ["exp1"]  # nnU-Net not trained yet
    with pytest.raises(UserError, match="thrombus model of experiment 'nn' not found"):
        results_files(r, "nn")
    s = nnunet_settings(training, "nn")
    checkpoint = (r / "nnunet/trained" / f"Dataset{s['dataset_id']:03d}_nn" /
                  "nnUNetTrainerBudget__nnUNetPlans__2d/fold_all/checkpoint_final.pth")
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    assert trained_experiments(r) == ["exp1", "nn"]
    found = results_files(r, "nn")
    assert found["kind"] == "nnunet" and found["model"] == checkpoint
    assert results_files(r)["experiment"] == "exp1" and results_files(r)["kind"] == "thrombseg"
    out = tmp_path / "out"
    code = main(["predict", str(out), "--results", str(r), "--experiment", "nn", "--swi", patient["files"]["swi"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is an nnU-Net baseline" in err[0] and not out.exists()
