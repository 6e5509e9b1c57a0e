"""Hard-negative training: mining the model's false positives on training patients only, negative
stacks centred on them at the configured share, nothing changed when off, exact resume."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_training import TINY, make_case

from thrombseg.config import ConfigError, validate_config
from thrombseg.core.case import Case, load_case
from thrombseg.training import hard_negatives
from thrombseg.training.config import TrainConfig, changed_settings
from thrombseg.training.data import StackDataset
from thrombseg.training.hard_negatives import false_positive_centres, mine_false_positives, mining_epochs
from thrombseg.training.trainer import MINING_LOG, Trainer, train

SHAPE = (32, 32, 12)
TARGET = (slice(6, 10), slice(6, 10), slice(3, 5))
DECOY = (slice(22, 25), slice(20, 23), slice(7, 9))  # dark on swi like a thrombus, not labelled: a vein
DARK = -1.5  # swi noise is N(0, 0.3): 5 sd, so only the planted spots are this dark
HN = {"enabled": True, "share": 0.5, "every": 1, "threshold": 0.5, "max_per_case": 4}


def decoy_case(sid: str, seed: int, target: bool = True) -> Case:
    """A patient whose swi shows a dark target (also bright on dwi) and an unlabelled dark decoy."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(SHAPE, np.uint8)
    if target:
        lab[TARGET] = 1
    swi = rng.normal(0, 0.3, SHAPE).astype(np.float32) - 2.5 * lab
    swi[DECOY] -= 2.5
    dwi = rng.normal(0, 0.3, SHAPE).astype(np.float32) + 1.5 * lab
    return Case(sid, "c", {"swi": swi, "dwi": dwi}, {"thrombus": lab} if target else {}, spacing=(1.0, 1.0, 2.0))


class DarkSpots(torch.nn.Module):
    """A stub detector: the target class wherever swi (channel 0) is darker than DARK."""

    def forward(self, x, available=None):
        fg = 8.0 * (DARK - x[:, 0])
        return torch.stack([torch.zeros_like(fg), fg], 1)


class Boosted(torch.nn.Module):
    """A real network plus the stub's logits: it trains, and lights up the decoys from the start."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.stub = inner, DarkSpots()

    def forward(self, x, available):
        return self.inner(x, available) + self.stub(x, available)


class DecoyTrainer(Trainer):
    def build_network(self):
        return Boosted(super().build_network())


def _cfg(**over) -> TrainConfig:
    return TrainConfig.from_dict(TINY | {"modalities": ["swi", "dwi"], "stack": 4, "crop": [16, 16],
                                         "dropout": {"schedule": "none"}} | over)


# ---------------------------------------------------------------- off: the stacks of before
# StackDataset corners drawn by the code before hard negatives existed (seed 7, epochs 0 and 3).
BEFORE = {
    "brain": [(38, 34, 4), (36, 34, 9), (1, 5, 10), (42, 3, 4), (30, 4, 10), (39, 25, 7), (38, 31, 4), (39, 34, 7),
              (0, 0, 9), (21, 4, 4), (25, 10, 12), (30, 5, 11)],
    "near": [(38, 34, 4), (36, 34, 9), (1, 5, 10), (7, 0, 4), (30, 4, 10), (29, 8, 7), (38, 31, 4), (37, 34, 7),
             (0, 0, 9), (3, 0, 4), (25, 10, 12), (30, 5, 11)],
}


def test_without_hard_negatives_the_stacks_are_those_of_before(tmp_path):
    cases = [load_case(make_case(tmp_path, f"g{i}", 10 + i, shape=(60, 50, 16))) for i in range(3)]
    brain = np.zeros((60, 50, 16), bool)
    brain[8:52, 10:44] = True
    cases[1].brain = brain
    for mode, corners in BEFORE.items():
        kw = {"stack": 4, "crop": (16, 16), "fg_oversample": 0.3, "seed": 7, "negatives": mode, "augment": None}
        plain = StackDataset(cases, ["swi", "dwi"], **kw)
        unmined = StackDataset(cases, ["swi", "dwi"], hard_share=0.5, **kw)  # on, before any round
        unshared = StackDataset(cases, ["swi", "dwi"], **kw)  # centres, but share 0
        unshared.set_hard_negatives({c.subject: [[30, 25, 8]] for c in cases})
        for ds in (plain, unmined, unshared):
            got = []
            for epoch in (0, 3):
                ds.set_epoch(epoch)
                got += [ds.origin(i) for i in range(len(ds))]
            assert [corner for _, corner in got] == corners and {k for k, _ in got} <= {"positive", "negative"}
    kw = {"stack": 4, "crop": (16, 16), "fg_oversample": 0.3, "seed": 7, "augment": TrainConfig().augment}
    plain, unmined = StackDataset(cases, ["swi", "dwi"], **kw), StackDataset(cases, ["swi", "dwi"], hard_share=1, **kw)
    for i in range(len(plain)):  # the augmentation's draws follow unchanged too
        a, b = plain[i], unmined[i]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unchanged_run_resumes_a_checkpoint_saved_before_the_option():
    cfg = TrainConfig.from_dict({})
    older = {k: v for k, v in cfg.to_dict().items() if k != "hard_negatives"}
    assert changed_settings(older, cfg) == []
    assert changed_settings(older, TrainConfig.from_dict({"hard_negatives": {"enabled": True}})) == ["hard_negatives"]


# ---------------------------------------------------------------- mining and drawing
def test_a_lit_false_positive_is_mined_and_drawn_at_the_share():
    cases = [decoy_case("p0", 0), decoy_case("n0", 1, target=False)]
    mined = mine_false_positives(DarkSpots(), cases, _cfg(hard_negatives=HN), "cpu", validation=[])
    assert [(m.subject, m.n_false_positives, len(m.centres)) for m in mined] == [("p0", 1, 1), ("n0", 1, 1)]
    for m in mined:  # the thrombus is a hit, not a false positive; the decoy is one
        x, y, z = m.centres[0]
        assert all(s.start <= v < s.stop for s, v in zip(DECOY, (x, y, z)))

    share, n = 0.4, 400
    ds = StackDataset([cases[0]] * n, ["swi", "dwi"], stack=4, crop=(16, 16), seed=3, hard_share=share)
    ds.set_hard_negatives({m.subject: m.centres for m in mined})
    draws = [ds.origin(2 * i + 1) for i in range(n)]
    hard = [corner for kind, corner in draws if kind == "hard"]
    assert abs(len(hard) / n - share) < 0.08  # binomial sd 0.025
    centre = mined[0].centres[0]
    for corner in hard:  # the decoy is in each hard stack, not necessarily at its centre
        assert all(c0 <= c < c0 + size for c0, c, size in zip(corner, centre, (16, 16, 4)))
    items = [ds[2 * i + 1] for i in range(12) if draws[i][0] == "hard"]
    assert items and all(it["x"][0].min() < DARK and it["y"].sum() == 0 for it in items)
    again = StackDataset([cases[0]] * n, ["swi", "dwi"], stack=4, crop=(16, 16), seed=3, hard_share=share)
    again.set_hard_negatives({m.subject: m.centres for m in mined})
    assert [again.origin(2 * i + 1) for i in range(n)] == draws  # same seed, same stacks


def test_the_most_confident_false_positives_are_kept():
    prob = np.zeros((20, 20, 6), np.float32)
    prob[2:4, 2:4, 1:3] = 0.9  # the target
    prob[10:12, 3:5, 2] = 0.7
    prob[15, 15, 4] = 0.95  # one voxel, but the most confident
    prob[5:9, 12:16, 1:4] = 0.7  # as confident as the second, larger
    truth = np.zeros(prob.shape, np.uint8)
    truth[3, 3, 2] = 1
    n, centres = false_positive_centres(prob, truth, 0.5, max_keep=2)
    assert n == 3 and centres.tolist() == [[15, 15, 4], [6, 13, 2]]  # the voxel nearest the centroid
    assert false_positive_centres(prob, None, 0.5, 10)[0] == 4  # no target: every component
    assert false_positive_centres(prob, truth, 0.99, 10)[1].shape == (0, 3)


def test_mining_rounds_every_n_epochs_or_at_each_dropout_stage():
    assert mining_epochs(_cfg(epochs=10)) == []
    assert mining_epochs(_cfg(epochs=10, hard_negatives=HN | {"every": 3})) == [3, 6, 9]
    staged = _cfg(epochs=30, hard_negatives=HN | {"every": None}, dropout={"schedule": "staircase"})
    assert mining_epochs(staged) == [8, 15, 23]
    for bad in ({"share": 1.5}, {"every": 0}, {"threshold": 0}, {"max_per_case": 0}):
        with pytest.raises(ValueError, match="training.hard_negatives." + next(iter(bad))):
            TrainConfig.from_dict({"hard_negatives": bad})


def test_a_run_without_a_mining_round_says_so(tmp_path, caplog):
    cases = [decoy_case("t0", 0)]
    for every, warned in ((4, True), (2, False)):
        caplog.clear()
        Trainer(cases, [], _cfg(epochs=4, hard_negatives=HN | {"every": every}), tmp_path / f"every{every}")
        said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert bool(said) == warned and all("no mining round falls within 4 epochs (every: 4 >= epochs)" in m
                                           for m in said), said


def test_hard_negative_keys_in_the_schema():
    validate_config({"training": {"defaults": {"hard_negatives": HN | {"every": None}}}}, partial=True)
    for bad, line in [({"share": 1.5}, "training.defaults.hard_negatives.share must be a number in [0, 1]"),
                      ({"evry": 2}, "unknown key 'training.defaults.hard_negatives.evry' (did you mean 'every'?)"),
                      ({"every": 0}, "training.defaults.hard_negatives.every must be")]:
        with pytest.raises(ConfigError) as exc:
            validate_config({"training": {"defaults": {"hard_negatives": bad}}}, partial=True)
        assert line in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


# ---------------------------------------------------------------- the trainer
def test_validation_patients_are_never_mined(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    seen = []
    real = hard_negatives.predict_volume

    def recording(model, arrays, *a, **kw):
        seen.append(id(arrays[0]))
        return real(model, arrays, *a, **kw)

    monkeypatch.setattr(hard_negatives, "predict_volume", recording)
    train_cases, val_cases = [decoy_case(f"t{i}", i) for i in range(2)], [decoy_case("v0", 9)]
    cfg = _cfg(epochs=3, hard_negatives=HN, val_every=1)
    DecoyTrainer(train_cases, val_cases, cfg, tmp_path / "run").fit()
    assert seen == [id(c.images["swi"]) for c in train_cases] * 2  # rounds before epochs 1 and 2
    with pytest.raises(ValueError, match="v0 is also a validation patient"):
        mine_false_positives(DarkSpots(), train_cases + val_cases, cfg, "cpu", validation=val_cases)
    with pytest.raises(ValueError, match="t1 is also a validation patient"):  # a leaking split: before epoch 1
        Trainer(train_cases, [decoy_case("t1", 5)], cfg, tmp_path / "leak")


def test_training_with_hard_negatives_logs_rounds_and_resumes_exactly(tmp_path):
    torch.set_num_threads(1)
    cases = [decoy_case(f"t{i}", i) for i in range(2)] + [decoy_case("n0", 7, target=False)]
    cfg = _cfg(epochs=4, repeats=2, augment={}, selection="last", hard_negatives=HN | {"every": 2})

    full = DecoyTrainer(cases, [], cfg, tmp_path / "full")
    full.fit()
    kinds = {full.dataset.origin(i)[0] for i in range(len(full.dataset))}
    assert "hard" in kinds  # the last epoch drew stacks on the mined decoys
    hist = pd.read_csv(tmp_path / "full" / "metrics.csv")
    assert hist.mined_fp_mean.isna().tolist() == [True, True, False, True]  # one round, before epoch 2
    assert hist.mined_fp_max[2] >= 1 and hist.mined_centres[2] >= 3 and hist.mining_s[2] >= 0
    rounds = pd.read_csv(tmp_path / "full" / MINING_LOG, sep="\t")
    assert rounds.epoch.tolist() == [2] * 3 and rounds.subject.tolist() == ["t0", "t1", "n0"]
    assert (rounds.fp_components >= 1).all() and (rounds.centres_kept >= 1).all()

    # stopped after the round's epoch, resumed: epoch 3 draws on the checkpoint's centres
    part = DecoyTrainer(cases, [], cfg, tmp_path / "part")
    part.fit(stop_after=2)
    resumed = DecoyTrainer(cases, [], cfg, tmp_path / "part")
    resumed.maybe_resume()
    assert resumed.start_epoch == 3 and resumed.dataset.hard_centres.keys() == {"t0", "t1", "n0"}
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert pd.read_csv(tmp_path / "part" / MINING_LOG, sep="\t").equals(rounds)


def test_plain_training_writes_no_mining_log(tmp_path):
    torch.set_num_threads(1)
    cases = [decoy_case(f"t{i}", i) for i in range(2)]
    train(cases, [], _cfg(epochs=1), tmp_path / "run")
    assert not (tmp_path / "run" / MINING_LOG).exists()
    assert not {"mined_fp_mean", "mining_s"} & set(pd.read_csv(tmp_path / "run" / "metrics.csv").columns)
