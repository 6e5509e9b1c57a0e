"""Workflow policy (thrombseg.plan) and the results layout, without a DAG: milliseconds each."""
from __future__ import annotations

import pandas as pd
import pytest

from thrombseg.core.layout import Layout
from thrombseg.plan import (
    NNUNET_BUDGET_TRAINER,
    NNUNET_GMD_TRAINER,
    Plan,
    cohort_table,
    experiment_labels,
    experiment_settings,
    first_thrombseg_experiment,
    nnunet_dataset_id,
    nnunet_settings,
    parse_protocol,
    protocol_id,
    train_resources,
    tune_grid,
)
from thrombseg.training.splits import assign_splits

CENTERS = {"ctrA": 8, "ctrB": 8, "ctrC": 6}


def _cohort(splits: dict[str, str] | None = None) -> pd.DataFrame:
    center_of = {f"{c}{i:03d}": c for c, n in CENTERS.items() for i in range(n)}
    return cohort_table(center_of, [(splits or {}).get(s, "") for s in center_of])


def _config(centers=(), tune=None, **experiments) -> dict:
    experiments = experiments or {"gmd": {"protocol": "multicentric"},
                                  "mono": {"protocol": "monocentric-ctrB", "dropout": {"schedule": "none"}},
                                  "loco": {"protocol": "leave-center-out-ctrC"}}
    inference = {} if tune is None else {"tune": tune}
    return {"results": "out/", "centers": list(centers), "splits": {"seed": 0}, "inference": inference,
            "training": {"experiments": experiments, "defaults": {"dropout": {"schedule": "staircase"}},
                         "mem_mb": 8000, "runtime_min": 60, "gpus": 0}}


def _plan(config: dict | None = None, cohort: pd.DataFrame | None = None, **kwargs) -> Plan:
    return Plan(config or _config(), _cohort() if cohort is None else cohort, assign_splits, **kwargs)


def _counts(df: pd.DataFrame) -> dict:
    return {k: int(v) for k, v in df.groupby(["center", "split"]).size().items()}


# ------------------------------------------------------------------ protocols and splits
def test_protocol_ids_round_trip():
    assert protocol_id("multicentric") == "multicentric"
    assert protocol_id("leave-center-out", "ctr-1") == "leave-center-out-ctr-1"
    assert parse_protocol("leave-center-out-ctr-1") == ("leave-center-out", "ctr-1")
    assert parse_protocol("monocentric") == ("monocentric", None)
    with pytest.raises(ValueError, match="unknown protocol 'bicentric'"):
        parse_protocol("bicentric")


def test_multicentric_holds_out_val_and_test_in_every_center():
    df = _plan().splits_of("multicentric")
    assert len(df) == sum(CENTERS.values())
    assert _counts(df) == {("ctrA", "test"): 2, ("ctrA", "train"): 5, ("ctrA", "val"): 1,
                           ("ctrB", "test"): 2, ("ctrB", "train"): 5, ("ctrB", "val"): 1,
                           ("ctrC", "test"): 2, ("ctrC", "train"): 3, ("ctrC", "val"): 1}
    assert df.equals(_plan().splits_of("multicentric"))  # deterministic
    assert not df.equals(_plan(dict(_config(), splits={"seed": 1})).splits_of("multicentric"))


def test_monocentric_uses_one_center_and_leave_center_out_tests_on_it():
    mono = _plan().splits_of("monocentric-ctrB")
    assert set(mono["center"]) == {"ctrB"} and set(mono["split"]) == {"train", "val", "test"}
    loco = _plan().splits_of("leave-center-out-ctrC")
    assert set(loco.loc[loco["center"] == "ctrC", "split"]) == {"test"}
    assert "test" not in set(loco.loc[loco["center"] != "ctrC", "split"])
    assert set(_plan().splits_of("monocentric")["center"]) == {"ctrA"}  # default: largest, by name


def test_sheet_split_wins_except_for_the_held_out_center():
    given = {"ctrA000": "test", "ctrC000": "train"}
    plan = _plan(cohort=_cohort(given))
    multi = plan.splits_of("multicentric").set_index("subject")["split"]
    assert multi["ctrA000"] == "test"
    loco = plan.splits_of("leave-center-out-ctrC").set_index("subject")["split"]
    assert loco["ctrC000"] == "test"


def test_a_new_center_never_reshuffles_the_others():
    before = _plan().splits_of("multicentric").set_index("subject")["split"]
    grown = pd.concat([_cohort(), cohort_table({f"ctrD{i}": "ctrD" for i in range(5)})])
    after = _plan(cohort=grown).splits_of("multicentric").set_index("subject")["split"]
    assert after[before.index].equals(before)


def test_unknown_protocol_or_center_is_one_line():
    with pytest.raises(ValueError, match="center 'ctrX' not in the cohort"):
        _plan().subjects_in("monocentric-ctrX", "test")
    with pytest.raises(ValueError, match="unknown protocol 'bicentric-ctrA'"):
        _plan().splits_of("bicentric-ctrA")


# ------------------------------------------------------------------ a run's plan
def test_plan_subjects_and_test_subjects_follow_the_centers_filter():
    full = _plan()
    assert full.subjects == sorted(full.cohort_center) and full.centers == ["ctrA", "ctrB", "ctrC"]
    assert full.selection == "" and full.layout == Layout("out")
    one = _plan(_config(centers=["ctrA"]))
    assert one.centers == ["ctrA"] and one.center_subjects("ctrA") == one.subjects
    assert one.selection == "centers-ctrA" and one.layout.agg == "out/selections/centers-ctrA"
    assert one.test_subjects("gmd") == [s for s in full.test_subjects("gmd") if s.startswith("ctrA")]
    assert one.test_subjects("mono") == [] and one.test_subjects("loco") == []
    assert one.report_experiments == ["gmd"]
    assert full.report_experiments == ["gmd", "loco", "mono"]
    assert full.test_centers("loco") == ["ctrC"]
    # the splits come from the whole cohort whatever the filter
    assert one.subjects_in("multicentric", "train") == full.subjects_in("multicentric", "train")
    assert _plan(_config(centers=["ctrX"])).unknown_centers() == ["ctrX"]


def test_val_centers_cover_the_whole_cohort():
    one = _plan(_config(centers=["ctrA"]))
    val = one.val_centers("gmd")
    assert set(val.values()) == {"ctrA", "ctrB", "ctrC"} and all(val[s] == s[:4] for s in val)


def test_tuning_needs_a_grid_and_validation_patients():
    assert _plan().tunes("gmd")
    assert not _plan(_config(tune={})).tunes("gmd")  # `tune: {}` or null turns it off
    tiny = cohort_table({"a1": "ctrA", "b1": "ctrB"})  # one patient per center: no validation split
    assert not _plan(_config(gmd={"protocol": "multicentric"}), tiny).tunes("gmd")
    assert tune_grid(None) == {"min_volume_mm3": [20.0, 40.0, 80.0]} and tune_grid({"tune": None}) == {}


def test_one_center_rerun_reuses_models_only_when_all_exist():
    cfg = _config(centers=["ctrA"])
    present = _plan(cfg, exists=lambda path: True)
    assert present.reuse_models and present.missing_frozen() == []
    assert present.preprocess_subjects == present.test_subjects("gmd")  # only the selection's test patients
    absent = _plan(cfg, exists=lambda path: "infarct" not in path)
    assert not absent.reuse_models and absent.preprocess_subjects == absent.subjects
    assert absent.missing_frozen() == ["out/models/infarct/multicentric/model.pt",  # experiments' order
                                       "out/models/infarct/leave-center-out-ctrC/model.pt",
                                       "out/models/infarct/monocentric-ctrB/model.pt"]
    assert _plan(cfg, exists=lambda path: True).frozen_files()[:4] == [  # one landmarks file per protocol
        "out/harmonization/leave-center-out-ctrC/landmarks.json", "out/harmonization/monocentric-ctrB/landmarks.json",
        "out/harmonization/multicentric/landmarks.json", "out/models/gmd/thrombus/model.pt"]
    assert not _plan(exists=lambda path: True).reuse_models  # a full run retrains


def test_each_protocol_is_harmonized_with_landmarks_its_test_patients_never_saw():
    plan = _plan()
    assert plan.protocols == ["leave-center-out-ctrC", "monocentric-ctrB", "multicentric"]
    for pid in plan.protocols:
        fitted = set(plan.subjects_in(pid, "train"))  # what rule fit_landmarks fits protocol pid on
        assert fitted and not fitted & set(plan.subjects_in(pid, "test"))
        assert set(plan.subjects_in(pid, "train", "val")) <= set(plan.harmonized_subjects(pid))
    loco = plan.subjects_in("leave-center-out-ctrC", "train")
    assert not [s for s in loco if plan.cohort_center[s] == "ctrC"]  # the held-out center is unseen
    assert set(plan.test_subjects("loco")) == {s for s, c in plan.cohort_center.items() if c == "ctrC"}
    assert set(plan.test_subjects("loco")) <= set(plan.harmonized_subjects("leave-center-out-ctrC"))


def test_experiment_labels_and_resources():
    labels = experiment_labels(_config()["training"])
    assert labels == {"gmd": "gmd (gradual dropout, staircase)", "mono": "mono (no dropout)",
                      "loco": "loco (gradual dropout, staircase)"}
    assert train_resources(_config()["training"]) == {"mem_mb": 8000, "runtime": 60}
    assert train_resources({"mem_mb": 1, "runtime_min": 2, "gpus": 1})["gpu"] == 1


# ------------------------------------------------------------------ nnU-Net baseline experiments
NN = {"model": "nnunet", "protocol": "multicentric"}


def test_nnunet_settings_keep_nnunets_defaults_and_pick_the_trainer():
    training = _config(nn=NN, gmd_nn=NN | {"dropout": {"schedule": "staircase"}, "epochs": 3, "iterations": 4},
                       off=NN | {"dropout": {"schedule": "none"}}, bare=NN | {"dropout": {"p": 0.3}},
                       three=NN | {"configuration": "3d_fullres", "dataset_id": 42})["training"]
    nn = nnunet_settings(training, "nn")
    assert nn == {"dataset_id": nnunet_dataset_id("nn", NN), "configuration": "2d", "trainer": NNUNET_BUDGET_TRAINER,
                  "budget": {}, "dropout": None}  # nothing from training.defaults (its dropout is staircase)
    gmd = nnunet_settings(training, "gmd_nn")
    assert gmd["trainer"] == NNUNET_GMD_TRAINER and gmd["dropout"] == {"schedule": "staircase"}
    assert gmd["budget"] == {"epochs": 3, "iterations": 4}
    assert nnunet_settings(training, "off")["trainer"] == NNUNET_BUDGET_TRAINER
    assert nnunet_settings(training, "bare")["trainer"] == NNUNET_GMD_TRAINER  # DropoutConfig's default schedule
    three = nnunet_settings(training, "three")
    assert three["configuration"] == "3d_fullres" and three["dataset_id"] == 42
    with pytest.raises(ValueError, match="not an nnU-Net experiment"):
        nnunet_settings(_config()["training"], "gmd")
    with pytest.raises(ValueError, match="nnunet_train rule trains it"):
        experiment_settings(training, "nn")
    assert experiment_settings(training, "nn", "infarct")[0]["target"] == "infarct"  # the protocol's infarct model


def test_nnunet_dataset_ids_are_stable_and_never_shared():
    alone = _plan(_config(nn=NN)).nnunet["nn"]
    crowded = _plan(_config(nn=NN, a_nn=NN, zz=NN, gmd={"protocol": "multicentric"})).nnunet["nn"]
    assert alone["dataset_id"] == crowded["dataset_id"]  # other experiments never move an id
    assert 500 <= alone["dataset_id"] <= 999 and alone["dataset"] == f"Dataset{alone['dataset_id']}_nn"
    clash = _plan(_config(nn=NN, other=NN | {"dataset_id": alone["dataset_id"]}))
    with pytest.raises(ValueError, match="same nnU-Net dataset id"):
        clash.nnunet  # noqa: B018


def test_plan_keeps_nnunet_experiments_off_thrombsegs_trainer():
    plan = _plan(_config(gmd={"protocol": "multicentric"}, nn=NN))
    assert plan.thrombseg_experiments == ["gmd"] and plan.nnunet_experiments == ["nn"]
    ds = plan.nnunet["nn"]["dataset"]
    checkpoint = f"out/nnunet/trained/{ds}/nnUNetTrainerBudget__nnUNetPlans__2d/fold_all/checkpoint_final.pth"
    assert plan.thrombus_model("nn") == checkpoint and plan.thrombus_model("gmd") == "out/models/gmd/thrombus/model.pt"
    artefacts = plan.audit_artefacts("nn")
    assert artefacts["thrombus model"] == ("model", checkpoint)
    assert artefacts["infarct model"] == ("model", "out/models/infarct/multicentric/model.pt")
    assert artefacts["post-processing tuning"] == ("tuning", "out/models/nn/thrombus/postprocess.json")
    assert checkpoint in plan.frozen_files()
    labels = experiment_labels(_config(nn=NN, g=NN | {"dropout": {"schedule": "linear"}})["training"])
    assert labels == {"nn": "nn (nnU-Net 2d, no dropout)", "g": "g (nnU-Net 2d, gradual dropout, linear)"}


def test_a_switched_off_experiment_is_out_of_the_run():
    """``enabled: false`` (what an overlay can do to an experiment of config/config.yaml) removes it from
    the run, its labels and the first-experiment choice; its other keys are not training options."""
    config = _config(nn=NN | {"enabled": False}, gmd={"protocol": "multicentric", "enabled": True},
                     off={"protocol": "multicentric", "enabled": False})
    plan = _plan(config)
    assert plan.experiments == ["gmd"] and plan.nnunet_experiments == [] and plan.thrombseg_experiments == ["gmd"]
    assert list(experiment_labels(config["training"])) == ["gmd"]
    assert first_thrombseg_experiment(_config(nn=NN, b={"protocol": "multicentric"}, a={"protocol": "multicentric"})
                                      ["training"]) == "b"  # config order, nnU-Net skipped
    options, extra = experiment_settings(config["training"], "gmd")
    assert "enabled" not in options and extra["enabled"] is True
    assert nnunet_settings(_config(nn=NN | {"enabled": True})["training"], "nn")["configuration"] == "2d"


# ------------------------------------------------------------------ layout
def test_layout_paths():
    lay = Layout("res/", "centers-ctrB")
    assert lay.root == "res" and lay.logs == "res/logs" and lay.agg_logs == "res/selections/centers-ctrB/logs"
    assert lay.thrombus_model("{experiment}") == "res/models/{experiment}/thrombus/model.pt"
    assert lay.tuned_postprocess("e") == "res/models/e/thrombus/postprocess.json"
    assert lay.infarct_model("multicentric") == "res/models/infarct/multicentric/model.pt"
    assert lay.landmarks("p") == "res/harmonization/p/landmarks.json" and lay.splits("p") == "res/splits/p.tsv"
    assert lay.predictions("e", "s1") == "res/predictions/e/s1" and lay.harmonized() == "res/harmonized"
    assert lay.harmonized("p", "s1") == "res/harmonized/p/s1"
    assert lay.qc_table("ctrA") == "res/qc/ctrA/preprocessing_qc.tsv"
    assert lay.qc_montages("ctrA") == "res/qc/ctrA/montages"
    assert lay.synthetic_montage("ctrA") == "res/synthetic/qc/montage_ctrA.png"
    assert lay.sheet_validation() == "res/ingest/sheet_validation.json"
    assert lay.dataset_description("harmonized") == "res/harmonized/dataset_description.json"
    assert lay.metrics("e") == "res/selections/centers-ctrB/metrics/e"
    assert lay.figures == "res/selections/centers-ctrB/figures"
    assert lay.provenance == "res/selections/centers-ctrB/provenance"
    assert lay.provenance_config() == "res/provenance/config.yaml"  # always the full run's
    ds = Layout.nnunet_dataset(7, "nn")
    assert ds == "Dataset007_nn" and lay.nnunet("raw") == "res/nnunet/raw"
    assert lay.nnunet_raw_json(ds) == "res/nnunet/raw/Dataset007_nn/dataset.json"
    assert lay.nnunet_preprocessed(ds) == "res/nnunet/preprocessed/Dataset007_nn"
    assert lay.nnunet_checkpoint(ds, "T", "2d") == "res/nnunet/trained/Dataset007_nn/T__nnUNetPlans__2d/fold_all/" \
                                                   "checkpoint_final.pth"


def test_the_infarct_model_never_mines_hard_negatives():
    """training.defaults.hard_negatives is the thrombus model's; the infarct model runs as without it."""
    on = {"enabled": True, "every": 2}
    training = {"defaults": {"epochs": 4, "hard_negatives": on}, "infarct": {"hard_negatives": on},
                "experiments": {"e": {"protocol": "multicentric"}}}
    thrombus, _ = experiment_settings(training, "e")
    infarct, _ = experiment_settings(training, "e", "infarct")
    assert thrombus["hard_negatives"] == on and thrombus["target"] == "thrombus"
    assert infarct == {"epochs": 4, "target": "infarct"}


def test_the_synthetic_cohorts_thrombus_presence_reaches_the_splits():
    """The workflow's cohort table carries the planned presence; every center's negatives get held out."""
    from thrombseg.synth import subject_ids, thrombus_presence

    assert list(cohort_table({"a1": "ctrA"}).columns) == ["subject", "center", "split"]
    present = thrombus_presence(n_per_center=12, negative_share=0.25)
    assert list(present) == list(subject_ids(n_per_center=12)) and sum(not p for p in present.values()) == 12
    cohort = cohort_table(subject_ids(n_per_center=12), present=list(present.values()))
    splits = _plan(cohort=cohort).splits_of("multicentric")
    negatives = splits[splits.subject.map(lambda s: not present[s])]
    for center, group in negatives.groupby("center"):
        assert sorted(group.split) == ["test", "train", "val"], center
