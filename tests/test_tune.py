"""Post-processing settings chosen on validation patients (thrombseg.inference.tune)."""

import json

import numpy as np
import pytest
import torch

from thrombseg.core.case import Case
from thrombseg.inference.predict import LoadedModel, inference_settings
from thrombseg.inference.settings import InferenceConfig, InferenceError
from thrombseg.inference.tune import candidates, tune_postprocessing, write_tuning
from thrombseg.models.checkpoint import ModelSpec


class Oracle(torch.nn.Module):
    """Returns its first input channel as the foreground probability (1 -> ~1, 0 -> ~0)."""

    def forward(self, x, available):
        fg = 20.0 * (x[:, 0] - 0.5)
        return torch.stack([torch.zeros_like(fg), fg], 1)


def _case(subject, thrombus_at, fp_at, infarct_at, size=2):
    shape = (40, 40, 12)
    swi, dwi, lab = np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.uint8)
    x, y, z = thrombus_at
    lab[x:x + size, y:y + size, z:z + size] = 1
    swi[lab > 0] = 1  # the model finds the true thrombus (8 voxels)...
    x, y, z = fp_at
    swi[x:x + 4, y:y + 4, z:z + 3] = 1  # ...and a larger false positive (48 voxels)
    x, y, z = infarct_at
    dwi[x:x + 6, y:y + 6, z:z + 4] = 1  # the infarct lies beside the true thrombus
    return Case(subject, "c", {"swi": swi, "dwi": dwi}, {"thrombus": lab}, None, (1.0, 1.0, 2.0))


@pytest.fixture
def models():
    thrombus = LoadedModel(Oracle(), ModelSpec(modalities=["swi", "dwi"], stack=4))  # reads swi only
    infarct = LoadedModel(Oracle(), ModelSpec(modalities=["dwi"], stack=4, target="infarct"))
    return thrombus, infarct


def test_a_minimum_size_that_drops_small_thrombi_is_not_kept(models):
    cases = [_case("v1", (10, 10, 5), (30, 30, 5), (13, 13, 4)), _case("v2", (25, 8, 3), (8, 30, 6), (28, 8, 2))]
    r = tune_postprocessing(cases, *models, InferenceConfig(min_size_voxels=20), {"min_size_voxels": [0, 5, 10, 20]})
    rows = {row["min_size_voxels"]: row for row in r["candidates"]}
    assert rows[20]["detection"] == 0.0 and rows[10]["detection"] == 0.0  # the 8-voxel thrombi are removed
    assert rows[5]["detection"] == 1.0 and rows[5]["dice"] > 0.9
    assert r["chosen"] == {"min_size_voxels": 0}  # 0 and 5 tie: the first in the grid wins
    assert r["subjects"] == ["v1", "v2"]


def test_ties_keep_the_configured_settings(models):
    cases = [_case("v1", (10, 10, 5), (30, 30, 5), (13, 13, 4))]
    r = tune_postprocessing(cases, *models, InferenceConfig(min_size_voxels=20), {"min_size_voxels": [30, 40]})
    assert r["chosen"] == {"min_size_voxels": 20} and len(r["candidates"]) == 3


def test_candidates_are_checked_and_the_choice_is_applied(tmp_path):
    assert candidates(InferenceConfig(), {"min_size_voxels": [20, 5]}) == [{"min_size_voxels": 20},
                                                                          {"min_size_voxels": 5}]
    with pytest.raises(InferenceError, match="cannot tune.*overlap"):
        candidates(InferenceConfig(), {"overlap": [0.5]})
    with pytest.raises(InferenceError, match="min_size_voxels must be >= 0"):
        candidates(InferenceConfig(), {"min_size_voxels": [-1]})
    path = write_tuning({"chosen": {"min_size_voxels": 5}}, tmp_path / "pp.json")
    cfg = inference_settings({"min_size_voxels": 20, "tune": {"min_size_voxels": [5, 20]}}, path, device="cpu")
    assert cfg.min_size_voxels == 5 and cfg.device == "cpu"
    (tmp_path / "bad.json").write_text(json.dumps({"candidates": []}))
    with pytest.raises(InferenceError, match="bad.json: not a post-processing tuning file"):
        inference_settings({}, tmp_path / "bad.json")


# ---------------------------------------------------------------------------- candidate scoring
def _negative(subject, fp_at, infarct_at):
    """A thrombus-negative patient: the model's false positive, an infarct, an empty thrombus label."""
    case = _case(subject, (0, 0, 0), fp_at, infarct_at)
    case.labels["thrombus"][:] = 0
    case.images["swi"][:2, :2, :2] = 0  # the "thrombus" _case planted at the corner is gone too
    return case


def _validation():
    return [_case("v1", (10, 10, 5), (30, 30, 5), (13, 13, 4)), _case("v2", (25, 8, 3), (8, 30, 6), (28, 8, 2)),
            _case("v3", (8, 20, 4), (28, 18, 6), (11, 23, 3)), _negative("n1", (20, 25, 4), (6, 6, 3))]


def test_score_selection_is_fitted_on_the_validation_candidates(models, tmp_path):
    from thrombseg.inference.predict import predict_case, subset_metrics

    r = tune_postprocessing(_validation(), *models, InferenceConfig(min_size_voxels=1), {"selection": "score"})
    chosen, fit = r["chosen"], r["candidate_scoring"]
    assert chosen["selection"] == "score" and chosen["scorer"]["features"] and fit["fitted"]
    assert fit["subjects"] == r["subjects"] == ["v1", "v2", "v3", "n1"]
    # every patient with all its sequences, without dwi and without swi (the Oracle reads swi: nothing then)
    assert fit["n_maps"] == 12 and fit["subsets"] == "leave-one-out"
    assert [(m["subject"], m["sequences"]) for m in fit["maps"][:4]] == [("v1", "all"), ("v2", "all"), ("v3", "all"),
                                                                        ("n1", "all")]
    assert {m["sequences"] for m in fit["maps"][4:]} == {"dwi", "swi"}
    assert (fit["n_candidates"], fit["n_thrombus_candidates"], fit["n_negative_patients"]) == (14, 6, 1)
    assert fit["threshold_scores"] == "out-of-fold: 4 folds by patient" and "Youden" in fit["rule"]
    assert chosen["presence_threshold"] == fit["threshold"]
    # the tuned file drives prediction: a new patient's thrombus is kept, a new negative patient gets "no thrombus"
    icfg = inference_settings({"min_size_voxels": 1}, write_tuning(r, tmp_path / "pp.json"), device="cpu")
    assert icfg.selection == "score" and icfg.scorer == chosen["scorer"]
    t1, t2 = _case("t1", (12, 25, 5), (30, 8, 6), (15, 28, 4)), _negative("t2", (10, 10, 6), (30, 30, 3))
    pos, neg = predict_case(t1, *models, icfg), predict_case(t2, *models, icfg)
    assert pos["mask"][12, 25, 5] and pos["mask"].sum() == 8 and pos["presence_prob"] >= icfg.presence_threshold
    assert neg["mask"].sum() == 0 and neg["presence_prob"] < icfg.presence_threshold
    # the metrics rows carry the presence probability and the decision (pred_present)
    rows = subset_metrics(t1, pos), subset_metrics(t2, neg)
    assert [r["presence_prob"] for r in rows] == [pos["presence_prob"], neg["presence_prob"]]
    assert (rows[0]["pred_present"], rows[0]["truth_present"], rows[0]["detected"]) == (True, True, 1.0)
    assert (rows[1]["pred_present"], rows[1]["truth_present"]) == (False, False)
    assert np.isnan(rows[1]["dice"]) and np.isnan(rows[1]["raw_dice"])  # no Dice on a negative patient


def test_the_candidates_dice_is_a_mean_over_thrombus_positive_patients(models):
    """A negative validation patient adds no Dice (it was 1 for predicting nothing, 0 otherwise)."""
    grid = {"min_size_voxels": [1, 100]}  # 100 removes every component: the negative predicts nothing
    both = tune_postprocessing(_validation(), *models, InferenceConfig(min_size_voxels=1), grid)["candidates"]
    alone = tune_postprocessing(_validation()[:3], *models, InferenceConfig(min_size_voxels=1), grid)["candidates"]
    assert [row["dice"] for row in both] == [row["dice"] for row in alone]
    assert both[1]["dice"] == 0.0 and both[0]["dice"] > 0.9


def test_without_negative_patients_the_positives_without_their_thrombus_choose_the_threshold(models):
    r = tune_postprocessing(_validation()[:3], *models, InferenceConfig(min_size_voxels=1), {"selection": "score"})
    fit = r["candidate_scoring"]
    assert "9 positive, 0 negative and 6 pseudo-negative" in fit["rule"]  # 3 patients x 3 sets; 6 maps read swi
    with_swi = [m for m in fit["maps"] if m["sequences"] != "dwi"]
    for m in with_swi:  # each one's thrombus passes, its best false candidate alone does not
        assert m["presence_prob_without_thrombus"] < r["chosen"]["presence_threshold"] <= m["presence_prob"]
    assert all(m["presence_prob"] == 0.0 for m in fit["maps"] if m["sequences"] == "dwi")  # no candidate
    assert (fit["sensitivity"], fit["specificity"]) == (2 / 3, 1.0)
    # a patient whose thrombus no candidate touches is no pseudo-negative (nothing to take away)
    only_fp = _case("v4", (2, 2, 0), (30, 8, 6), (15, 28, 4), size=1)  # a 1-voxel thrombus in the map's corner
    with_miss = tune_postprocessing([*_validation()[:3], only_fp], *models, InferenceConfig(min_size_voxels=2),
                                    {"selection": "score"})["candidate_scoring"]
    assert "12 positive, 0 negative and 6 pseudo-negative" in with_miss["rule"]
    assert not any("presence_prob_without_thrombus" in m for m in with_miss["maps"] if m["subject"] == "v4")


def test_a_scorer_that_cannot_be_fitted_leaves_the_rule(models):
    # min 20 voxels drops every 8-voxel thrombus: no candidate is a thrombus, nothing to learn from
    r = tune_postprocessing(_validation(), *models, InferenceConfig(min_size_voxels=20), {"selection": "score"})
    assert r["chosen"] == {} and not r["candidate_scoring"]["fitted"]
    assert "0 of 8 validation candidates" in r["candidate_scoring"]["reason"]  # 4 patients, with and without dwi
    with pytest.raises(InferenceError, match="tune.selection must be one of"):
        tune_postprocessing(_validation(), *models, InferenceConfig(), {"selection": "best"})


def _write_case(root, case):
    """A harmonized case folder (what load_case reads)."""
    folder = root / case.subject
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{case.subject}_swi.npy", case.images["swi"])
    np.save(folder / f"{case.subject}_label-thrombus.npy", case.labels["thrombus"])
    (folder / f"{case.subject}_grid.json").write_text(json.dumps({"spacing_mm": list(case.spacing)}))


def test_audit_a_test_patient_cannot_influence_the_scorer(tmp_path, monkeypatch):
    """The scorer and threshold are fitted on the validation ids given to tune_subjects only: a test
    patient's files are never read, and deleting or changing them leaves postprocess.json byte-identical."""
    from thrombseg.inference import tune
    from thrombseg.inference.predict import ProbabilityModel
    from thrombseg.inference.tune import tune_subjects

    root = tmp_path / "harmonized"
    validation = _validation()
    for case in [*validation, _case("test1", (20, 20, 4), (5, 30, 5), (23, 23, 3))]:
        _write_case(root, case)
    oracle = ProbabilityModel(("swi",), lambda case, keep: np.asarray(case.images["swi"], np.float32), "oracle")
    section = {"device": "cpu", "min_size_voxels": 1, "tune": {"selection": "score"}}
    ids = {c.subject: "c" for c in validation}
    read = []
    real_load = tune.load_case
    monkeypatch.setattr(tune, "load_case", lambda folder, s, c: read.append(s) or real_load(folder, s, c))

    def fitted(name):
        tune_subjects(root, ids, oracle, None, tmp_path / name, section)
        return (tmp_path / name).read_bytes()

    before = fitted("a.json")
    assert json.loads(before)["chosen"]["selection"] == "score" and "test1" not in read
    assert json.loads(before)["candidate_scoring"]["subjects"] == list(ids)
    # the test patient's label now marks its false positive, and its map changes: nothing moves
    lab = np.load(root / "test1" / "test1_label-thrombus.npy")
    np.save(root / "test1" / "test1_label-thrombus.npy", 1 - lab)
    np.save(root / "test1" / "test1_swi.npy", np.ones_like(lab, np.float32))
    assert fitted("b.json") == before
    for f in (root / "test1").iterdir():
        f.unlink()
    (root / "test1").rmdir()
    assert fitted("c.json") == before and "test1" not in read
    # the check can fail: the same change to a validation patient changes the scorer
    v1 = np.load(root / "v1" / "v1_label-thrombus.npy")
    np.save(root / "v1" / "v1_label-thrombus.npy", (np.load(root / "v1" / "v1_swi.npy") > 0) & (v1 == 0))
    assert json.loads(fitted("d.json"))["chosen"]["scorer"] != json.loads(before)["chosen"]["scorer"]


def test_the_infarct_threshold_is_tuned_on_the_infarct_probability(models):
    """``infarct_threshold`` candidates threshold the infarct probability each (an earlier version kept
    the mask of the configured value, so the candidates could not differ)."""
    case = _case("v1", (10, 10, 5), (30, 30, 5), (13, 13, 4))
    case.images["dwi"][case.images["dwi"] > 0] = 0.45  # the oracle's infarct probability there: about 0.27
    r = tune_postprocessing([case], *models, InferenceConfig(min_size_voxels=0), {"infarct_threshold": [0.2]})
    rows = {row["infarct_threshold"]: row["detection"] for row in r["candidates"]}
    # at 0.5 no infarct: the larger false positive wins; at 0.2 the component beside the infarct does
    assert rows == {0.5: 0.0, 0.2: 1.0} and r["chosen"] == {"infarct_threshold": 0.2}
