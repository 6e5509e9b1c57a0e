"""Training: splits, stack sampling, loss falls, SIGKILL + resume is bit-identical on CPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from thrombseg.core.case import load_case
from thrombseg.models.checkpoint import ModelSpec, load_model
from thrombseg.training.config import TrainConfig, changed_settings
from thrombseg.training.data import StackDataset
from thrombseg.training.splits import assign_splits
from thrombseg.training.trainer import (
    Trainer,
    curriculum,
    evaluate_cases,
    full_strength_epoch,
    make_dropout,
    selectable,
    train,
)

TINY = {"model": "upattllstm", "model_kwargs": {"widths": [4, 8]}, "stack": 4, "crop": [24, 24],
        "batch_size": 4, "lr": 3e-3, "augment": None, "val_every": 100}


def make_case(folder: Path, sid: str, seed: int, with_flair: bool = True, shape=(28, 30, 10)) -> Path:
    """A case whose target is a dark blob on 'swi' and a bright one on 'dwi'."""
    rng = np.random.default_rng(seed)
    d = folder / sid
    d.mkdir(parents=True, exist_ok=True)
    lab = np.zeros(shape, np.uint8)
    c = rng.integers([6, 6, 2], [shape[0] - 6, shape[1] - 6, shape[2] - 2])
    lab[c[0] - 2:c[0] + 2, c[1] - 2:c[1] + 2, c[2] - 1:c[2] + 1] = 1
    swi = rng.normal(0, 0.3, shape).astype(np.float32) - 2.5 * lab
    dwi = rng.normal(0, 0.3, shape).astype(np.float32) + 1.5 * lab
    np.save(d / f"{sid}_swi.npy", swi)
    np.save(d / f"{sid}_dwi.npy", dwi)
    if with_flair:
        np.save(d / f"{sid}_flair.npy", rng.normal(0, 1, shape).astype(np.float32))
    np.save(d / f"{sid}_label-thrombus.npy", lab)
    (d / f"{sid}_harmonized.json").write_text(json.dumps({"spacing_mm": [1, 1, 2], "center": "c"}))
    return d


def test_infarct_label_of_an_earlier_version_is_read(tmp_path):
    """A harmonized folder written when the infarct was called "lesion" keeps its infarct label."""
    d = make_case(tmp_path, "c0", 0)
    old = np.zeros((28, 30, 10), np.uint8)
    old[5:9, 5:9, 3:5] = 1
    np.save(d / "c0_label-lesion.npy", old)
    case = load_case(d)
    assert set(case.labels) == {"thrombus", "infarct"} and np.array_equal(case.labels["infarct"], old)
    np.save(d / "c0_label-infarct.npy", 1 - old)  # today's name wins over the old one
    assert np.array_equal(load_case(d).labels["infarct"], 1 - old)
    assert not load_case(make_case(tmp_path, "c1", 1)).labels.keys() - {"thrombus"}


def test_an_earlier_versions_infarct_run_resumes():
    """A checkpoint or model file saying target "lesion" is today's "infarct" run."""
    cfg = TrainConfig.from_dict({"target": "infarct"})
    saved = cfg.to_dict() | {"target": "lesion"}
    assert changed_settings(saved, cfg) == []
    assert TrainConfig.from_dict({"target": "lesion"}).target == "infarct"
    spec = ModelSpec.from_config({"model": "upattllstm", "target": "lesion"})  # an earlier infarct model file
    assert spec.target == "infarct" and spec.modalities == ["dwi", "adc", "flair"]


def test_splits_are_deterministic_and_per_protocol():
    sheet = pd.DataFrame({"subject": [f"s{i}" for i in range(24)], "center": ["A"] * 8 + ["B"] * 8 + ["C"] * 8,
                          "split": [""] * 23 + ["train"]})
    m1, m2 = assign_splits(sheet, "multicentric", seed=3), assign_splits(sheet, "multicentric", seed=3)
    assert m1.equals(m2)
    assert not m1.equals(assign_splits(sheet, "multicentric", seed=4))
    for c in "ABC":  # every center has held-out patients
        assert {"train", "test"} <= set(m1.loc[m1.center == c, "split"])
    assert m1.set_index("subject").loc["s23", "split"] == "train"  # the sheet's split wins
    mono = assign_splits(sheet, "monocentric", center="B")
    assert set(mono.center) == {"B"} and set(mono.split) == {"train", "val", "test"}
    loco = assign_splits(sheet, "leave-center-out", center="C")
    assert (loco.loc[loco.center == "C", "split"] == "test").all()
    assert {"train", "val"} <= set(loco.loc[loco.center == "A", "split"])
    assert "test" not in set(loco.loc[loco.center != "C", "split"])
    with pytest.raises(ValueError, match="center 'Z' not in the cohort"):
        assign_splits(sheet, "monocentric", center="Z")


def test_adding_a_center_keeps_the_other_centers_splits():
    sheet = pd.DataFrame({"subject": [f"s{i}" for i in range(16)], "center": ["B"] * 8 + ["C"] * 8, "split": ""})
    more = pd.concat([pd.DataFrame({"subject": [f"a{i}" for i in range(8)], "center": "A", "split": ""}), sheet])
    for protocol in ("multicentric", "leave-center-out"):
        before = assign_splits(sheet, protocol, seed=0, center="C" if protocol != "multicentric" else None)
        after = assign_splits(more, protocol, seed=0, center="C" if protocol != "multicentric" else None)
        merged = before.merge(after, on="subject", suffixes=("_before", "_after"))
        assert len(merged) == 16 and (merged.split_before == merged.split_after).all(), protocol


def _negative_sheet(n_per_center: int = 12, n_negative: int = 3, present: str = "false") -> pd.DataFrame:
    """3 centers; the first ``n_negative`` patients of each have ``thrombus_present`` = ``present``."""
    rows = [{"subject": f"{c}{i:02d}", "center": c, "split": "",
             "thrombus_present": present if i < n_negative else "true"} for c in "ABC" for i in range(n_per_center)]
    return pd.DataFrame(rows)


def test_splits_spread_each_centers_negatives_over_every_split():
    sheet = _negative_sheet()
    plain = assign_splits(sheet.drop(columns="thrombus_present"), "multicentric", seed=0)
    strat = assign_splits(sheet, "multicentric", seed=0)
    assert strat.equals(assign_splits(sheet, "multicentric", seed=0))
    negatives = set(sheet.loc[sheet.thrombus_present == "false", "subject"])
    for c in "ABC":
        neg = strat[(strat.center == c) & strat.subject.isin(negatives)]
        assert sorted(neg.split) == ["test", "train", "val"], c
        # the center's split sizes do not depend on the presence column
        assert (strat.loc[strat.center == c, "split"].value_counts()
                .equals(plain.loc[plain.center == c, "split"].value_counts())), c
    loco = assign_splits(sheet, "leave-center-out", seed=0, center="C")
    for c in "AB":
        assert {"train", "val"} <= set(loco.loc[loco.center == c].loc[lambda d: d.subject.isin(negatives), "split"])
    mono = assign_splits(sheet, "monocentric", seed=0, center="B")
    assert set(mono.loc[mono.subject.isin(negatives), "split"]) == {"train", "val", "test"}
    # bools (the workflow's synthetic cohort) read like sheet cells
    as_bools = sheet.assign(thrombus_present=sheet.thrombus_present == "true")
    assert assign_splits(as_bools, "multicentric", seed=0).equals(strat)


def test_splits_without_negatives_are_those_without_the_column():
    sheet = _negative_sheet(n_per_center=8)
    plain = sheet.drop(columns="thrombus_present")
    for present in ("true", ""):  # all present, or not stated
        stated = _negative_sheet(n_per_center=8, present=present)
        for protocol, center in (("multicentric", None), ("monocentric", "B"), ("leave-center-out", "C")):
            assert assign_splits(stated, protocol, seed=2, center=center).equals(
                assign_splits(plain, protocol, seed=2, center=center)), (present, protocol)
    # too few negatives for every split: they still land somewhere, center sizes unchanged
    few = assign_splits(_negative_sheet(n_per_center=8, n_negative=2), "multicentric", seed=0)
    assert few["split"].value_counts().equals(assign_splits(plain, "multicentric", seed=0)["split"].value_counts())


def test_demo_sized_centers_hold_out_negatives_in_test_and_positives_in_val():
    """8 patients per center, 2 of them negative (negative_share 0.2-0.3): the center's 2 test places
    and 1 val place are shared in proportion (test 0.5 -> 1 negative, val 0.25 -> 0), so test has a
    negative and a positive and val keeps its only place for a positive (it went to a negative)."""
    from thrombseg.plan import cohort_table
    from thrombseg.synth import subject_ids, thrombus_presence

    for share in (0.2, 0.3):
        present = thrombus_presence(n_per_center=8, negative_share=share)
        cohort = cohort_table(subject_ids(n_per_center=8), present=list(present.values()))
        splits = assign_splits(cohort, "multicentric", seed=0)
        splits["positive"] = splits.subject.map(present)
        for c, group in splits.groupby("center"):
            counts = group.groupby(["split", "positive"]).size().to_dict()
            assert counts == {("test", False): 1, ("test", True): 1, ("val", True): 1,
                              ("train", False): 1, ("train", True): 4}, (share, c, counts)
    # the last test or val place stays with the positives while they last
    many = assign_splits(_negative_sheet(n_per_center=8, n_negative=6), "multicentric", seed=0)
    for c, group in many.assign(positive=many.subject.str[1:].astype(int) >= 6).groupby("center"):
        assert set(group.loc[group.positive, "split"]) == {"test", "val"}, c


def test_stack_pairs_positive_then_target_free(tmp_path):
    cases = [load_case(make_case(tmp_path, f"c{i}", i, with_flair=i % 2 == 0)) for i in range(3)]
    ds = StackDataset(cases, ["swi", "dwi", "flair"], stack=4, crop=(24, 24))
    for i in range(len(ds)):
        item = ds[i]
        assert item["x"].shape == (3, 4, 24, 24) and item["y"].shape == (4, 24, 24)
        if i % 2 == 0:
            assert item["y"].sum() > 0, "positive stack must contain the target"
        else:
            assert item["y"].sum() == 0, "negative stack must be target-free"
        assert item["available"].tolist() == [True, True, i // 2 % 2 == 0]
    ds.set_epoch(1)
    a, b = ds[0]["x"], ds[0]["x"]
    assert torch.equal(a, b)  # same (seed, epoch, index) -> same draw


def test_target_free_stacks_cover_the_brain_or_stay_near(tmp_path):
    """``brain`` negatives are drawn over the brain's in-plane extent (what a whole-slice crop
    sees), ``near`` ones around the target; both stay at target-free neighbouring slices."""
    case = load_case(make_case(tmp_path, "c0", 0, shape=(120, 100, 12)))
    brain = np.zeros(case.shape, bool)
    brain[10:110, 20:90] = True
    case.brain = brain
    centre = np.argwhere(case.labels["thrombus"] > 0).mean(0)
    for mode in ("brain", "near"):
        ds = StackDataset([case] * 200, ["swi", "dwi"], stack=4, crop=(16, 16), negatives=mode)
        rng = np.random.default_rng(0)
        xy = np.array([ds._window(rng, i, positive=False)[:2] for i in range(200)]) + 8  # crop centres
        off = np.abs(xy - centre[:2])
        if mode == "near":
            assert (off <= 4 + 1).all()  # crop/4 around the target
        else:
            assert off.max() > 30 and xy[:, 0].min() >= 10 - 1 and xy[:, 0].max() <= 110
            assert xy[:, 1].min() >= 20 - 1 and xy[:, 1].max() <= 90
        assert all(ds[2 * i + 1]["y"].sum() == 0 for i in range(5))
    with pytest.raises(ValueError, match="negatives"):
        StackDataset([case], ["swi"], negatives="far")


def test_loss_falls_and_model_reloads(tmp_path):
    torch.set_num_threads(2)
    cases = [load_case(make_case(tmp_path / "data", f"c{i}", i)) for i in range(4)]
    cfg = TrainConfig.from_dict(TINY | {"modalities": ["swi", "dwi", "flair"], "epochs": 8, "repeats": 4, "lr": 1e-2,
                                        "dropout": {"schedule": "none"}})
    train(cases[:3], cases[3:], cfg, tmp_path / "run")
    hist = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert hist.train_loss.iloc[-1] < 0.8 * hist.train_loss.iloc[0]
    assert not np.isnan(hist.val_dice.iloc[-1])  # the last epoch is always validated
    model, cfg2 = load_model(tmp_path / "run" / "model.pt")
    assert cfg2.modalities == ["swi", "dwi", "flair"]
    # the patients behind the weights and the checkpoint choice, for the leakage audit
    assert json.loads((tmp_path / "run" / "subjects.json").read_text()) == {"train": ["c0", "c1", "c2"], "val": ["c3"]}
    assert (tmp_path / "run" / "training_curve.png").stat().st_size > 1000


KILL_SCRIPT = """
import logging, sys, torch
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_training import TINY
from thrombseg.core.case import load_case
from thrombseg.training.config import TrainConfig
from thrombseg.training.trainer import train
cases = [load_case({data!r} + f"/c{{i}}") for i in range(3)]
cfg = TrainConfig.from_dict(TINY | {{"modalities": ["swi", "dwi", "flair"], "epochs": 5, "repeats": 6,
                                    "augment": {{}}, "dropout": {{"p": 0.5}}}})
train(cases, [], cfg, sys.argv[1])
"""


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    for i in range(3):
        make_case(tmp_path / "data", f"c{i}", i)
    script = tmp_path / "run_train.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent), data=str(tmp_path / "data")))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    ref = subprocess.run([sys.executable, str(script), str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ck = run / "checkpoint_last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        # metrics.csv is written just after the checkpoint: on busy cores the test can look in between
        if ck.exists() and (run / "metrics.csv").exists() and len(pd.read_csv(run / "metrics.csv")) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(pd.read_csv(run / "metrics.csv"))
    assert killed_at < 5 and not (run / "model_last.pt").exists()
    res = subprocess.run([sys.executable, str(script), str(run)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stderr
    a = torch.load(tmp_path / "ref" / "model_last.pt", weights_only=False)["model"]
    b = torch.load(run / "model_last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"weights differ after resume: {k}"
    ha, hb = pd.read_csv(tmp_path / "ref" / "metrics.csv"), pd.read_csv(run / "metrics.csv")
    assert np.allclose(ha.train_loss, hb.train_loss, rtol=0, atol=0)


def test_changed_settings_train_from_scratch(tmp_path, caplog):
    """Snakemake re-runs training when its settings change; the old checkpoint must not be resumed."""
    cases = [load_case(make_case(tmp_path / "data", f"c{i}", i)) for i in range(2)]
    base = TINY | {"modalities": ["swi", "dwi", "flair"], "epochs": 2, "repeats": 2, "dropout": {"schedule": "none"}}
    train(cases, [], TrainConfig.from_dict(base), tmp_path / "run")
    new = TrainConfig.from_dict(base | {"lr": 1e-2})
    with caplog.at_level("WARNING", logger="thrombseg.training"):
        train(cases, [], new, tmp_path / "run")
    assert "other settings (lr): training from scratch" in caplog.text
    train(cases, [], new, tmp_path / "fresh")
    a = torch.load(tmp_path / "run" / "model_last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "fresh" / "model_last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(pd.read_csv(tmp_path / "run" / "metrics.csv")) == 2
    saved = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=False)["config"]
    assert changed_settings(saved, TrainConfig.from_dict(base | {"lr": 1e-2, "device": "cpu", "num_workers": 2})) == []
    assert changed_settings(saved, TrainConfig.from_dict(base | {"lr": 1e-2, "epochs": 3})) == ["epochs"]
    assert changed_settings(None, new) == []  # checkpoints that recorded nothing resume as before


# ---------------------------------------------------------------- curriculum and the dropout arms
def test_curriculum_takes_any_valid_boundaries():
    default = TrainConfig.from_dict({"epochs": 10})
    late = TrainConfig.from_dict({"epochs": 10, "dropout": {"stages": [0.5, 1.0], "boundaries": [0.3, 0.6]}})
    rows = [curriculum(e, late) for e in range(10)]              # raised "max() arg is an empty sequence"
    assert [r[0] for r in rows] == [0.0] * 3 + [0.5] * 3 + [1.0] * 4
    assert [r[1] for r in rows] == [-1] * 3 + [0] * 3 + [1] * 4
    # the site simulation follows augment.site_boundaries, not the dropout's stages
    assert [r[2] for r in rows] == [curriculum(e, default)[2] for e in range(10)]
    assert [curriculum(e, default)[2] for e in range(10)] == [.25] * 3 + [.5] * 2 + [.75] * 3 + [1.] * 2
    with pytest.raises(ValueError, match="equal length"):
        TrainConfig.from_dict({"dropout": {"stages": [1.0], "boundaries": [0.0, 0.5]}})


class _Recorder(torch.nn.Module):
    """Wraps the real model and keeps what each training step fed it."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x, available=None):
        self.seen.append((x.detach().clone(), available.detach().clone()))
        return self.inner(x, available)


def test_dropout_arms_differ_only_in_modality_dropout(tmp_path):
    """gmd / fixed / none: same stacks, same augmentation; per (sample, sequence) only a scalar factor
    (the dropout) differs, and ``none`` feeds the model the loader's batch unchanged. The recording
    trainer is a Trainer variant: a subclass overriding two hooks."""
    recorders, batches = {}, []

    class RecordingTrainer(Trainer):
        def build_network(self):
            recorders[self.cfg.dropout.schedule] = _Recorder(super().build_network())
            return recorders[self.cfg.dropout.schedule]

        def train_step(self, batch, attenuation, generator):
            batches.append((self.cfg.dropout.schedule, batch["x"].clone()))
            return super().train_step(batch, attenuation, generator)

    cases = [load_case(make_case(tmp_path / "data", f"c{i}", i)) for i in range(3)]
    for schedule in ("staircase", "fixed", "none"):
        cfg = TrainConfig.from_dict(TINY | {"modalities": ["swi", "dwi", "flair"], "epochs": 4, "augment": {},
                                            "dropout": {"schedule": schedule, "p": 0.5}})
        RecordingTrainer(cases, [], cfg, tmp_path / schedule).fit()
    none = recorders["none"].seen
    for schedule in ("none", "staircase", "fixed"):
        loader_x = [x for s, x in batches if s == schedule]
        assert len(loader_x) == len(none) == 4
        assert all(torch.equal(a, b) for a, b in zip(loader_x, [x for x, _ in none]))  # same stacks + augmentation
    assert all(torch.equal(x, lx) for (x, _), lx in zip(none, [x for s, x in batches if s == "none"]))
    for schedule in ("staircase", "fixed"):
        changed = 0
        for (x, av), (x0, av0) in zip(recorders[schedule].seen, none):
            assert not (av & ~av0).any()
            for b in range(x.shape[0]):
                for m in range(x.shape[1]):
                    ref, got = x0[b, m], x[b, m]
                    if torch.equal(ref, got):
                        continue
                    changed += 1
                    c = got.flatten()[ref.flatten().abs().argmax()] / ref.flatten()[ref.flatten().abs().argmax()]
                    assert torch.allclose(got, ref * c, rtol=1e-5, atol=1e-6), (schedule, b, m)
        assert changed > 0, schedule


def test_new_dropout_and_model_keys_in_the_schema():
    from thrombseg.config import ConfigError, validate_config

    good = {"dropout": {"schedule": "staircase", "grouping": "per_sample", "sigma": 0.1, "preset": "reference",
                        "stages": [0.5, 1.0], "boundaries": [0.3, 0.6]},
            "augment": {"site_boundaries": [0.0, 0.5]}, "model": "attllstm",
            "model_kwargs": {"query": "dwi", "keys": ["swi", "phase"], "extras": "query"}}
    validate_config({"training": {"defaults": good}}, partial=True)
    TrainConfig.from_dict(good)
    for bad, key in [({"dropout": {"grouping": "together"}}, "dropout.grouping"),
                     ({"dropout": {"preset": "authors"}}, "dropout.preset"),
                     ({"dropout": {"sigma": -0.1}}, "dropout.sigma"),
                     ({"dropout": {"alternate": True}}, "alternate"),
                     ({"model_kwargs": {"extras": "values"}}, "model_kwargs.extras")]:
        with pytest.raises(ConfigError, match=key) as exc:
            validate_config({"training": {"defaults": bad}}, partial=True)
        assert "\n" not in str(exc.value)


def test_demo_experiment_dropout_is_what_it_was():
    """config/config.yaml's upattllstm_gmd: the same GMD, called at every epoch with the same a, stage and
    site strength as before grouping / presets / site_boundaries existed (draws: test_modality_dropout)."""
    from conftest import REPO

    from thrombseg.config import read_yaml
    from thrombseg.plan import experiment_settings

    training = read_yaml(REPO / "config" / "config.yaml")["training"]
    cfg = TrainConfig.from_dict(experiment_settings(training, "upattllstm_gmd")[0])
    gmd = make_dropout(cfg)
    assert (gmd.p, gmd.sigma, gmd.voxel_sigma, gmd.eligible, gmd.grouping) == (0.25, 0.05, 0.0, None, "per_sequence")
    n = cfg.epochs
    for e in range(n):
        old_stage = max(i for i, b in enumerate(cfg.dropout.boundaries) if e >= b * n)  # the former code
        assert gmd.active(e, n)
        assert curriculum(e, cfg) == ([0.25, 0.5, 0.75, 1.0][old_stage], old_stage, (old_stage + 1) / 4)


@pytest.mark.parametrize(("selection", "chosen"), [("full_strength", 6), ("best", 0), ("last", 7)])
def test_checkpoint_selection(tmp_path, selection, chosen):
    """model.pt is the best validated epoch once the curriculum is complete (not an earlier, easier
    one), the best of all, or the last, as configured; validation Dice falls here, epoch by epoch."""
    torch.set_num_threads(1)

    class FallingValidation(Trainer):
        def validate(self, epoch):
            return {"val_dice": 1.0 - epoch / 10, "val_detection": 1.0}

    cases = [load_case(make_case(tmp_path / "data", f"c{i}", i)) for i in range(2)]
    cfg = TrainConfig.from_dict(TINY | {"modalities": ["swi", "dwi"], "epochs": 8, "selection": selection,
                                        "augment": {}, "dropout": {"schedule": "staircase"}})
    assert full_strength_epoch(cfg) == 6
    assert selectable(5, cfg) == (selection != "full_strength") and selectable(6, cfg) and selectable(7, cfg)
    FallingValidation(cases[:1], cases[1:], cfg, tmp_path / "run").fit()
    blob = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert blob["metrics"]["epoch"] == chosen
    with pytest.raises(ValueError, match="training.selection"):
        TrainConfig.from_dict({"selection": "median"})


def test_validation_scores_only_cases_with_a_target(tmp_path):
    """A thrombus-negative validation case (empty target) would add Dice 1 for predicting nothing:
    it is left out, so val_dice is that of the positive cases alone, and NaN without any."""
    torch.set_num_threads(1)

    class Nothing(torch.nn.Module):
        def forward(self, x, available):
            out = torch.zeros(x.shape[0], 2, *x.shape[2:])
            out[:, 0] = 10.0  # background everywhere
            return out

    positive = load_case(make_case(tmp_path / "data", "c0", 0))
    d = make_case(tmp_path / "data", "c1", 1)
    np.save(d / "c1_label-thrombus.npy", np.zeros((28, 30, 10), np.uint8))
    negative = load_case(d)
    cfg = TrainConfig.from_dict(TINY | {"modalities": ["swi", "dwi"], "val_subsets": "full"})
    alone = evaluate_cases(Nothing(), [positive], cfg, "cpu")
    assert alone == {"val_dice": 0.0, "val_detection": 0.0}
    assert evaluate_cases(Nothing(), [positive, negative], cfg, "cpu") == alone
    assert all(np.isnan(v) for v in evaluate_cases(Nothing(), [negative], cfg, "cpu").values())


def test_validation_averages_the_evaluated_sequence_subsets(tmp_path):
    """val_subsets: leave-one-out scores each validation case with its full set and each set missing
    one sequence (what the experiment is evaluated on); full scores the full set only."""
    torch.set_num_threads(1)
    seen = []

    class Model(torch.nn.Module):
        def forward(self, x, available):
            seen.append(tuple(available[0].tolist()))
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    case = load_case(make_case(tmp_path / "data", "c0", 0))
    for subsets, n in (("full", 1), ("leave-one-out", 4)):
        seen.clear()
        cfg = TrainConfig.from_dict(TINY | {"modalities": ["swi", "dwi", "flair"], "val_subsets": subsets})
        evaluate_cases(Model(), [case], cfg, "cpu")
        assert len(set(seen)) == n  # swi+dwi+flair, then each missing one
