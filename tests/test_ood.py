"""Out-of-distribution guard: the training profile in landmarks.json and the check of a new case.

Tiny preprocessed-like patients (16 x 16 x 12 voxels, a box of brain) are written by hand, so the
landmark fit and harmonization run in well under a second each.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("ants")

from thrombseg.preprocessing import ood  # noqa: E402
from thrombseg.preprocessing.harmonize import fit_landmarks, harmonize_subject  # noqa: E402

SHAPE = (16, 16, 12)
SPACING = (2.0, 2.0, 3.0)
SCALE = {"swi": 300.0, "dwi": 800.0, "flair": 500.0}  # typical intensity of each sequence
TRAIN = {"a": ("swi", "dwi"), "b": ("swi", "dwi"), "c": ("swi",)}


def _patient(pre: Path, subject: str, sequences, seed: int, scale: dict | None = None, shape=SHAPE) -> None:
    """A preprocessed patient: gamma-distributed intensities in a box of brain, its mask and preproc.json."""
    rng = np.random.default_rng(seed)
    d = pre / subject
    d.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*SPACING, 1.0])
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 1:-1] = True
    for seq in sequences:
        a = rng.gamma(4.0, (scale or {}).get(seq, 1.0) * SCALE[seq] / 4.0, shape).astype(np.float32)
        nib.save(nib.Nifti1Image(np.where(brain, a, 0).astype(np.float32), affine), d / f"{subject}_{seq}.nii.gz")
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), d / f"{subject}_brainmask.nii.gz")
    (d / f"{subject}_preproc.json").write_text(json.dumps({
        "subject": subject, "center": "c1", "sequences": list(sequences),
        "grid": {"shape": list(shape), "spacing_mm": list(SPACING), "affine_ras": affine.tolist()}}))


@pytest.fixture()
def cohort(tmp_path):
    """Three training patients and a test patient 't' drawn like them; landmarks fitted on the three."""
    pre = tmp_path / "pre"
    for i, (s, seqs) in enumerate(TRAIN.items()):
        _patient(pre, s, seqs, seed=i)
    _patient(pre, "t", ("swi", "dwi"), seed=10)
    lm = fit_landmarks(pre, list(TRAIN), tmp_path / "landmarks.json", sequences=["swi", "dwi", "flair"])
    return pre, lm


def _record(pre: Path, subject: str, landmarks: Path, out: Path) -> dict:
    info = harmonize_subject(pre, subject, landmarks, out)
    assert json.loads((out / subject / f"{subject}_arrays.json").read_text())["ood"] == info["ood"]
    return info["ood"]


def test_profile_comes_from_the_training_patients_only(cohort, tmp_path):
    pre, lm = cohort
    profile = json.loads(lm.read_text())["profile"]
    assert profile["n_subjects"] == 3 and profile["version"] == ood.PROFILE_VERSION
    assert profile["sequence_share"] == {"swi": 1.0, "dwi": pytest.approx(2 / 3), "flair": 0.0}
    assert profile["combinations"] == {"dwi+swi": 2, "swi": 1} and set(profile["intensity"]) == {"swi", "dwi"}
    assert profile["brain_volume_ml"]["median"] == pytest.approx(12 * 12 * 10 * 12 / 1000)
    before = lm.read_bytes()
    _patient(pre, "t", ("swi", "dwi", "flair"), seed=99, scale={"swi": 10.0}, shape=(16, 16, 6))  # t changed
    again = fit_landmarks(pre, list(TRAIN), tmp_path / "again.json", sequences=["swi", "dwi", "flair"])
    assert again.read_bytes() == before  # the test patient's values never enter the profile
    with_t = fit_landmarks(pre, [*TRAIN, "t"], tmp_path / "with_t.json", sequences=["swi", "dwi", "flair"])
    assert json.loads(with_t.read_text())["profile"] != profile  # (the comparison would see it)


def test_in_distribution_case_gives_no_warning(cohort, tmp_path):
    pre, lm = cohort
    rec = _record(pre, "t", lm, tmp_path / "h")
    assert rec["checked"] and rec["warnings"] == [] and rec["out_of_distribution"] is False
    assert rec["note"] is None and set(rec["stats"]["intensity"]) == {"swi", "dwi"}


def test_intensity_scaled_case_warns(cohort, tmp_path):
    pre, lm = cohort
    _patient(pre, "x10", ("swi", "dwi"), seed=11, scale={"swi": 10.0})
    rec = _record(pre, "x10", lm, tmp_path / "h")
    assert rec["out_of_distribution"] is True and len(rec["warnings"]) == 1, rec["warnings"]
    assert rec["warnings"][0].startswith("swi: raw intensities far outside the training patients'")


def test_a_sequence_stored_in_other_units_by_some_centers_does_not_warn():
    """Phase in radians (most training patients) and in vendor integers to +-4096 (a few): a new
    patient in integers whose middle percentiles fall between the centers' is no outlier, one scaled
    far beyond every training patient is."""
    pct = [1, 50, 60, 99]
    rad = [[-3.1, -0.2 + 0.01 * i, 0.02, 3.1] for i in range(12)]
    ints = [[-4000.0, -700.0 + 50 * i, 100.0 * i, 4000.0] for i in range(4)]
    stats = [ood.patient_stats(["phase"], np.ones((4, 4, 4), bool), (1, 1, 1), {"phase": v}) for v in rad + ints]
    profile = ood.build_profile(stats, pct, ["phase"])

    def case(values):
        return ood.check_case(ood.patient_stats(["phase"], np.ones((4, 4, 4), bool), (1, 1, 1), {"phase": values}),
                              profile)

    assert case([-4096.0, 200.0, 900.0, 4096.0]) == []  # p60 beyond every training patient's, by less than the span
    assert case([-40960.0, 2000.0, 9000.0, 40960.0])[0].startswith("phase: raw intensities far outside")


def test_unseen_sequence_and_combination_warn(cohort, tmp_path):
    pre, lm = cohort
    _patient(pre, "fl", ("swi", "flair"), seed=12)
    rec = _record(pre, "fl", lm, tmp_path / "h")
    assert rec["warnings"] == ["flair: no training patient had this sequence"] and rec["out_of_distribution"]
    # every sequence seen, never together: the combination is the finding
    stats = [ood.patient_stats(seqs, np.ones((4, 4, 4), bool), (1, 1, 1), {}) for seqs in (["swi"], ["dwi"])]
    profile = ood.build_profile(stats * 20, [1, 50, 99], ["swi", "dwi"])
    case = ood.patient_stats(["swi", "dwi"], np.ones((4, 4, 4), bool), (1, 1, 1), {})
    assert ood.check_case(case, profile) == ["sequences dwi+swi: only 0% of the training patients (0 of 40) "
                                             "had all of them"]
    assert ood.check_case(ood.patient_stats(["swi"], np.ones((4, 4, 4), bool), (1, 1, 1), {}), profile) == []


def test_tiny_field_of_view_warns(cohort, tmp_path):
    pre, lm = cohort
    _patient(pre, "slab", ("swi", "dwi"), seed=13, shape=(16, 16, 4))
    rec = _record(pre, "slab", lm, tmp_path / "h")
    assert rec["out_of_distribution"] is True
    assert any(w.startswith("brain volume") for w in rec["warnings"]), rec["warnings"]
    assert any(w.startswith("field of view (grid extent) along z: 12 mm") for w in rec["warnings"])
    assert not any("along x" in w or "voxel spacing" in w or "intensit" in w for w in rec["warnings"])


def test_old_landmarks_without_profile_give_a_note_not_an_error(cohort, tmp_path):
    pre, lm = cohort
    old = json.loads(lm.read_text())
    del old["profile"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    _patient(pre, "x10", ("swi", "dwi"), seed=11, scale={"swi": 10.0})
    rec = _record(pre, "x10", tmp_path / "old.json", tmp_path / "h")
    assert rec["checked"] is False and rec["out_of_distribution"] is None and rec["warnings"] == []
    assert "no training profile" in rec["note"] and "old.json" in rec["note"]
    assert (tmp_path / "h" / "x10" / "x10_swi.npy").is_file()  # harmonized as before
    future = old | {"profile": {"version": 99}}
    (tmp_path / "future.json").write_text(json.dumps(future))
    assert "version 99 not understood" in _record(pre, "x10", tmp_path / "future.json", tmp_path / "h2")["note"]


def test_harmonized_record_of_an_earlier_folder(tmp_path):
    """predict-harmonized on a folder harmonized before the guard: a note, nothing flagged."""
    (tmp_path / "s_arrays.json").write_text(json.dumps({"spacing_mm": [1, 1, 1]}))
    rec = ood.harmonized_record(tmp_path, "s")
    assert rec["out_of_distribution"] is None and "harmonized by an earlier thrombseg" in rec["note"]
